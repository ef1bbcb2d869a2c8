"""``first_session``: first-session adaptation, then a frozen model."""

from __future__ import annotations

from strategies.registry import Callbacks, StrategyConfig, StrategyPlugin, register_strategy


@register_strategy("first_session")
class FirstSession(StrategyPlugin, Callbacks):
    """Trains the first experience like finetune, then nothing changes.

    First-session adaptation (as in APER / SimpleCIL's adapted variant and RanPAC's first
    stage): the metric loss on the base task, then the model is frozen, weights and
    BatchNorm statistics alike (every later experience stops before its first step, so
    no forward pass runs in training mode). It cannot forget what the first session
    learnt; what it misses is everything the later classes could have taught it."""

    trains_experiences = 1
    #: the first experience trains as finetune does (the kit checks it)
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        pass
