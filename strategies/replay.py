"""``replay``: a class-balanced exemplar memory that joins the P x K batches."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from strategies.registry import (
    Callbacks,
    StrategyConfig,
    StrategyPlugin,
    derived_seed,
    register_strategy,
)


@register_strategy("replay")
class Replay(StrategyPlugin, Callbacks):
    """Replay: a class-balanced exemplar memory of mem_size images (rehearsal reference).

    After each experience every seen class keeps ``mem_size // #seen classes`` exemplars
    (old classes shrink to the new quota, new ones are drawn at random, seeded). While
    training the next experiences the memory is added to the training set, so the P x K
    sampler draws old classes too. The memory is stored as (experience, index) pairs.
    """

    class Config(StrategyConfig):
        mem_size: int = Field(500, ge=1, description="total number of stored images")
        seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the exemplar selection")

    #: nothing to tune: the memory size is a stated budget, not a hyperparameter to search
    #: (``lrbench tune`` runs replay once, at its matrix values, as it does finetune/joint)
    tunable = {}

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.memory: dict[int, list[tuple[int, int]]] = {}  # class -> [(exp, index)]

    def after_train_dataset_adaptation(self, strategy: Any, **kwargs: Any) -> None:
        if not self.memory:
            return
        stream = strategy.experience.origin_stream
        by_exp: dict[int, list[int]] = {}
        for items in self.memory.values():
            for e, i in items:
                by_exp.setdefault(e, []).append(i)
        data = strategy.adapted_dataset
        for e in sorted(by_exp):
            data = data.concat(stream[e].dataset.train().subset(sorted(by_exp[e])))
        strategy.adapted_dataset = data

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        exp = strategy.experience
        targets = np.asarray([int(t) for t in exp.dataset.targets])
        new_classes = sorted(set(targets.tolist()) - set(self.memory))
        quota = max(1, self.config.mem_size // max(1, len(self.memory) + len(new_classes)))
        for c in self.memory:
            self.memory[c] = self.memory[c][:quota]
        rng = np.random.RandomState(derived_seed(self.config.seed, 7919,
                                                 exp.current_experience))
        for c in new_classes:
            idx = np.flatnonzero(targets == c)
            chosen = rng.choice(idx, size=min(quota, len(idx)), replace=False)
            self.memory[c] = [(int(exp.current_experience), int(i)) for i in chosen]

    def state_dict(self) -> dict[str, Any]:
        return {"memory": {c: list(v) for c, v in self.memory.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = {int(c): [tuple(p) for p in v] for c, v in state["memory"].items()}
