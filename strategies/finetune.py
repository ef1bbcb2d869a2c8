"""``finetune``: the lower bound."""

from __future__ import annotations

from avalanche.core import SupervisedPlugin

from strategies.registry import StrategyConfig, StrategyPlugin, register_strategy


@register_strategy("finetune")
class Finetune(StrategyPlugin, SupervisedPlugin):
    """Fine-tuning: the metric loss on each new experience alone (lower bound)."""

    class Config(StrategyConfig):
        pass
