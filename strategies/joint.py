"""``joint``: the upper bound, trained on every experience seen so far."""

from __future__ import annotations

import functools
from typing import Any

from strategies.registry import Callbacks, StrategyConfig, StrategyPlugin, register_strategy


@register_strategy("joint")
class Joint(StrategyPlugin, Callbacks):
    """Joint training on all data seen so far, same budget per experience (upper bound).

    The data of earlier experiences is taken from the stream itself (nothing is stored), so
    the plugin has no state to checkpoint.
    """

    #: only the first experience's data there: finetune's loop (the kit checks it)
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        pass

    def after_train_dataset_adaptation(self, strategy: Any, **kwargs: Any) -> None:
        exp = strategy.experience
        stream = exp.origin_stream
        seen = [stream[j].dataset.train() for j in range(exp.current_experience + 1)]
        strategy.adapted_dataset = functools.reduce(lambda a, b: a.concat(b), seen)
