"""``finetune``: the lower bound."""

from __future__ import annotations

from strategies.registry import Callbacks, StrategyConfig, StrategyPlugin, register_strategy


@register_strategy("finetune")
class Finetune(StrategyPlugin, Callbacks):
    """Fine-tuning: the metric loss on each new experience alone (lower bound)."""

    #: the loop every strategy that trains its first experience alike shares
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        pass
