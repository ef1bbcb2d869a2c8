"""``pretrained``: the model the stream starts from, never trained: the reference every
continual method must beat."""

from __future__ import annotations

from strategies.registry import Callbacks, StrategyConfig, StrategyPlugin, register_strategy


@register_strategy("pretrained")
class Pretrained(StrategyPlugin, Callbacks):
    """No training: the trunk's pooled features (its own dimension) are the embedding.

    With an ImageNet trunk this is the untrained reference of pretrained-model continual
    learning (SimpleCIL / APER's starting point): it cannot forget, and a method that ends
    below it on the union of seen classes would have done better by not learning. The
    model has no projection layer (a random one would only blur the features it
    reports); with a frozen stem the cached stem features feed the trunk as for every
    other strategy. Every experience stops before its first step."""

    trains_experiences = 0
    pooled_embedding = True

    class Config(StrategyConfig):
        pass
