"""``der``: Dark Experience Replay++ (Buzzega et al., NeurIPS 2020) in its embedding form."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from strategies.buffers import (
    BufferStrategy,
    ExemplarMemory,
    Selection,
    StoredItems,
    batch_indices,
    embed_items,
    evaluation_items,
    reservoir_slot,
    stack_items,
    student_forward,
)
from strategies.registry import (
    Callbacks,
    LogUniform,
    StrategyConfig,
    StrategyPlugin,
    derived_seed,
    register_strategy,
)


def der_mse(f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """DER's distillation term on embeddings: mean over the batch of ||f_i - z_i||^2 (the
    squared distance summed over the embedding's dimensions; Mammoth's ``F.mse_loss``
    averages over the dimensions too, i.e. this divided by d)."""
    return (f - z.detach()).pow(2).sum(dim=1).mean()


@register_strategy("der")
class DERPlusPlus(BufferStrategy, StrategyPlugin, Callbacks):
    """DER++: a replay buffer that stores each image with the embedding it was given.

    L = L_metric(current batch) + alpha * mean_i ||f(x'_i) - z'_i||^2 + beta *
    L_metric(f(x''), y''), where x' is a uniform draw from the buffer and z' the embedding
    the model gave those images' augmented views when they entered it, and x'' an
    independent P x K draw from the buffer (both re-augmented). With ``selection: random``
    the buffer is reservoir-sampled from every training batch, from the first step of the
    first experience on (Mammoth); with ``herding`` or ``closest_to_centre`` it is the
    class-balanced memory of :mod:`strategies.buffers`, filled at the end of each
    experience, where z is recorded (eval mode, un-augmented view).
    """

    regularizer = True

    class Config(StrategyConfig):
        mem_size: int = Field(500, ge=1, description="total number of stored images")
        alpha: float = Field(1.0, ge=0, description="weight of the embedding-distillation "
                             "(MSE) term on a buffer draw")
        beta: float = Field(0.5, ge=0, description="weight of the metric loss on a second, "
                            "independent P x K buffer draw")
        selection: Selection = Field(
            "random", description="random: reservoir sampling of the stream (Mammoth); "
            "herding or closest_to_centre: a class-balanced memory filled at each "
            "experience's end")
        seed: int = Field(0, ge=0, le=2**32 - 1,
                          description="seed of the reservoir and of the buffer draws")

    #: searched by ``lrbench tune``: on normalised embeddings the MSE has another scale than
    #: on Mammoth's logits, so neither weight carries over
    tunable = {"alpha": LogUniform(0.01, 100.0), "beta": LogUniform(0.05, 5.0)}

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.pairs: list[tuple[int, int]] = []  # (experience, index) per buffer slot
        self.labels: list[int] = []
        self.z: torch.Tensor | None = None  # slot -> stored embedding
        self.n_seen = 0
        self.memory = ExemplarMemory(self.config.mem_size, self.config.selection,
                                     self.config.seed)
        self._reset_experience()

    def _reset_experience(self) -> None:
        self._rng = np.random.RandomState(0)
        self._batches: list[list[int]] = []
        self._step = 0
        self._items: StoredItems | None = None
        self._out: torch.Tensor | None = None

    @property
    def reservoir(self) -> bool:
        """Whether the buffer is reservoir-sampled online (``selection: random``)."""
        return self.config.selection == "random"

    # -- callbacks ----------------------------------------------------------------------------
    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self._reset_experience()
        e = int(strategy.experience.current_experience)
        self._rng = np.random.RandomState(derived_seed(self.config.seed, 7919, e))
        # the buffer's images, re-read through the train transform; its pairs follow the
        # buffer as the reservoir replaces them
        self._items = StoredItems(strategy.experience.origin_stream, self.pairs)
        if self.reservoir:
            self._batches = batch_indices(strategy)

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        self._out = strategy.mb_output.detach()
        n = len(self.pairs)
        if n == 0:
            return
        items = self._items
        assert items is not None
        items.pairs = self.pairs
        size = len(strategy.mb_y)
        if self.config.alpha > 0:
            pick = self._rng.choice(n, size=min(size, n), replace=False)
            x, _ = stack_items(items, pick, strategy.device)
            assert self.z is not None
            z = self.z[torch.as_tensor(pick)].to(strategy.device)
            strategy.add_loss("der_mse", self.config.alpha
                              * der_mse(student_forward(strategy, x), z))
        if self.config.beta > 0:
            from strategies.template import pk_order

            pick = pk_order(self.labels, strategy.p, strategy.k,
                            seed=int(self._rng.randint(0, 2**31 - 1)), length=size)[:size]
            x, y = stack_items(items, pick, strategy.device)
            strategy.add_loss("der_metric", self.config.beta
                              * strategy._criterion(student_forward(strategy, x), y))

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if not self.reservoir or self._out is None:
            return
        idx = self._batches[self._step]
        self._step += 1
        labels = [int(t) for t in strategy.mb_y.tolist()]
        targets = strategy.adapted_dataset.targets
        if [int(targets[i]) for i in idx] != labels:
            raise RuntimeError("der: the batch drawn is not the one the P x K sampler's order "
                               "predicts; the buffer cannot tell which images it holds")
        e = int(strategy.experience.current_experience)
        out = self._out.float().cpu()
        if self.z is None:
            self.z = torch.zeros(self.config.mem_size, out.shape[1])
        for j, i in enumerate(idx):
            slot = reservoir_slot(self.n_seen, self.config.mem_size, self._rng)
            self.n_seen += 1
            if slot < 0:
                continue
            if slot == len(self.pairs):
                self.pairs.append((e, int(i)))
                self.labels.append(labels[j])
            else:
                self.pairs[slot], self.labels[slot] = (e, int(i)), labels[j]
            self.z[slot] = out[j]

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if self.reservoir:
            self._reset_experience()
            return
        # herding / closest-to-centre: the class-balanced memory, its embeddings recorded
        # now (the end of the experience), on the un-augmented view with the model in eval
        # mode, as Avalanche's DER records its logits
        kept = {p: self.z[s] for s, p in enumerate(self.pairs)} if self.z is not None else {}
        added = self.memory.update(strategy)
        fresh: dict[tuple[int, int], torch.Tensor] = {}
        if added:
            data = evaluation_items(strategy.experience)
            feats, _ = embed_items(strategy, data, [i for _, i in added])
            fresh = {p: feats[r].float() for r, p in enumerate(added)}
        by_pair = {**kept, **fresh}
        stored = self.memory.memory
        self.pairs = self.memory.items()  # class by class, in class order
        self.labels = [int(c) for c in sorted(stored) for _ in stored[c]]
        self.z = torch.stack([by_pair[p] for p in self.pairs]) if self.pairs else None
        self._reset_experience()

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"pairs": list(self.pairs), "labels": list(self.labels),
                "z": None if self.z is None else self.z.clone(), "n_seen": self.n_seen,
                "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs = [(int(e), int(i)) for e, i in state["pairs"]]
        self.labels = [int(c) for c in state["labels"]]
        self.z = None if state["z"] is None else state["z"].clone()
        self.n_seen = int(state["n_seen"])
        self.memory.load_state_dict(state["memory"])
        self._reset_experience()
