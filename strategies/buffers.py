"""Shared machinery of the rehearsal strategies (``replay``, ``der``, ``er_aml``): exemplar
selection rules, a class-balanced exemplar memory, reservoir sampling, and the small
helpers that draw batches from stored exemplars.

Selection rules (``selection:``, every buffer-using strategy; ``random`` is the default):

* ``random``: exemplars drawn at random (seeded); for ``der`` this is reservoir sampling of
  the training stream (Mammoth's buffer), for ``replay`` and ``er_aml`` a random draw per
  new class at the end of its experience;
* ``herding``: iCaRL's rule (Rebuffi et al. 2017) as PyCIL implements it (G-U-N/PyCIL
  ``models/base.py`` at commit 1655180, ``_construct_exemplar``): on L2-normalised features
  phi, with mu the class mean, p_k = argmin_x || mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||,
  each image chosen at most once. Avalanche 0.6.0's ``HerdingSelectionStrategy`` is the
  same greedy rule on features it does not normalise;
* ``closest_to_centre``: the images closest to the class mean first, Avalanche's
  ``ClosestToCenterSelectionStrategy`` (not herding: the two differ as soon as the mean
  lies between clusters, see :func:`herding_order`).

Features for herding and closest-to-centre are the model's embeddings (already
L2-normalised) of the class's train images under the evaluation transform (no
augmentation), with the model in eval mode, at the end of the experience that brought the
class (PyCIL's ``mode='test'`` extraction). When the memory shrinks, every class keeps the
first exemplars of its order (PyCIL's ``_reduce_exemplar``; for ``random`` a prefix of a
random draw is a random draw).

Strategies never import ``benchmarks``; the P x K order comes from :mod:`strategies.template`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from strategies.registry import StrategyConfig, derived_seed

#: the exemplar selection rules every buffer-using strategy offers (``selection:``)
Selection = Literal["random", "herding", "closest_to_centre"]
SELECTIONS: tuple[str, ...] = ("random", "herding", "closest_to_centre")


# -- selection rules ------------------------------------------------------------------------
def herding_order(features: torch.Tensor, normalize: bool = True) -> list[int]:
    """iCaRL's herding order of ``features`` (n x d): p_k = argmin_x || mu - (phi(x) +
    sum_{j<k} phi(p_j)) / k ||, each row chosen once, ties to the lowest index.

    ``normalize`` L2-normalises each row first (PyCIL); 1-d features must keep
    ``normalize=False`` (normalised, every 1-d value is +-1). On {1, -1, 0.3}: 0.3 (closest
    to the mean 0.1), then -1 (the mean of {0.3, -1} is -0.35, nearer 0.1 than 0.65), then 1;
    closest-to-centre gives 0.3, 1, -1.
    """
    x = features.detach().double().reshape(len(features), -1).cpu()
    if normalize:
        x = F.normalize(x, dim=1)
    mu = x.mean(dim=0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    free = torch.ones(len(x), dtype=torch.bool)
    for k in range(1, len(x) + 1):
        dist = ((mu - (x + running) / k) ** 2).sum(dim=1)
        dist[~free] = float("inf")
        i = int(torch.argmin(dist))  # the first of equal minima
        chosen.append(i)
        free[i] = False
        running = running + x[i]
    return chosen


def closest_to_centre_order(features: torch.Tensor, normalize: bool = True) -> list[int]:
    """The rows of ``features`` sorted by their distance to the mean of all rows, nearest
    first, ties to the lowest index (Avalanche's ``ClosestToCenterSelectionStrategy``, on
    L2-normalised rows with ``normalize``)."""
    x = features.detach().double().reshape(len(features), -1).cpu()
    if normalize:
        x = F.normalize(x, dim=1)
    dist = ((x - x.mean(dim=0)) ** 2).sum(dim=1)
    return [int(i) for i in torch.sort(dist, stable=True).indices]


def selection_order(selection: str, features: torch.Tensor) -> list[int]:
    """The order in which ``selection`` (``herding`` or ``closest_to_centre``) keeps the
    rows of ``features`` (L2-normalised first)."""
    if selection == "herding":
        return herding_order(features)
    if selection == "closest_to_centre":
        return closest_to_centre_order(features)
    raise ValueError(f"{selection!r} is not a feature-based selection rule")


def reservoir_slot(n_seen: int, size: int, rng: np.random.RandomState) -> int:
    """Reservoir sampling (Mammoth's ``utils/buffer.py``): the slot the item after
    ``n_seen`` earlier ones takes in a buffer of ``size``, or -1 when it is not kept."""
    if n_seen < size:
        return n_seen
    slot = int(rng.randint(0, n_seen + 1))
    return slot if slot < size else -1


# -- the model on stored images ------------------------------------------------------------
def student_forward(strategy: Any, x: torch.Tensor) -> torch.Tensor:
    """The training model on a batch ``x`` as the template runs it on its own batches
    (channels-last images and bfloat16 autocast when the template uses them), in the
    model's current mode."""
    if getattr(strategy, "channels_last", False) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if getattr(strategy, "amp", False):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return strategy.model(x).float()
    return strategy.model(x)


def stack_items(dataset: Any, indices: Sequence[int], device: Any) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """Items ``indices`` of ``dataset`` as a batch (inputs, labels) on ``device``, read
    one by one (no DataLoader: its iterator would draw a seed from torch's global random
    state, shifting every later draw)."""
    xs, ys = [], []
    for i in indices:
        item = dataset[int(i)]
        xs.append(torch.as_tensor(item[0]))
        ys.append(int(item[1]))
    return torch.stack(xs).to(device), torch.tensor(ys, dtype=torch.long, device=device)


@torch.no_grad()
def embed_items(strategy: Any, dataset: Any, indices: Sequence[int] | None = None,
                batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's embeddings (float64, on the CPU) and labels of items ``indices`` (all
    by default) of ``dataset``, with the model in eval mode (restored afterwards): what
    herding and the statistics-only baselines read."""
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    size = int(batch or getattr(strategy, "eval_mb_size", None) or 128)
    model = strategy.model
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for start in range(0, len(idx), size):
            x, y = stack_items(dataset, idx[start:start + size], strategy.device)
            feats.append(student_forward(strategy, x).detach().double().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not feats:
        return torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def batch_indices(strategy: Any) -> list[list[int]]:
    """The indices (into ``strategy.adapted_dataset``) of every batch the template's
    dataloader will draw in this experience, in order: the order of a copy of its P x K
    sampler (its random state and the class list it shuffles in place copied with it), so
    the sampler itself, and the batches the training loop draws, are left as they were."""
    import copy

    loader = strategy.dataloader
    order = [int(i) for i in copy.deepcopy(loader.sampler)]
    size = loader.batch_size
    n = len(order) // size if loader.drop_last else -(-len(order) // size)
    return [order[b * size:(b + 1) * size] for b in range(n)]


def evaluation_items(experience: Any) -> Any:
    """The experience's train images read as evaluation reads images, without
    augmentation, in the experience's index order: the stream's ``eval_views`` (lrbench's
    streams offer them: its train sets carry their augmentation inside), else the
    experience's dataset in Avalanche's eval mode."""
    views = getattr(experience.origin_stream, "eval_views", None)
    if views is not None:
        return views[int(experience.current_experience)]
    return experience.dataset.eval()


# -- the class-balanced memory ---------------------------------------------------------------
class ExemplarMemory:
    """A class-balanced memory of ``size`` images, filled at the end of each experience.

    After an experience every seen class keeps ``size // #seen classes`` exemplars (at
    least 1): old classes their first ones (in selection order), new classes chosen by
    ``selection`` among their train images. Stored as ``class -> [(experience, index)]``,
    the index into that experience's train set.
    """

    def __init__(self, size: int, selection: str = "random", seed: int = 0) -> None:
        self.size, self.selection, self.seed = int(size), selection, int(seed)
        self.memory: dict[int, list[tuple[int, int]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.memory.values())

    def items(self) -> list[tuple[int, int]]:
        """Every stored (experience, index), class by class in class order."""
        return [p for c in sorted(self.memory) for p in self.memory[c]]

    def update(self, strategy: Any) -> list[tuple[int, int]]:
        """Add the classes of the experience just trained, shrink the others; returns the
        (experience, index) pairs added."""
        exp = strategy.experience
        e = int(exp.current_experience)
        targets = np.asarray([int(t) for t in exp.dataset.targets])
        new_classes = sorted(set(targets.tolist()) - set(self.memory))
        quota = max(1, self.size // max(1, len(self.memory) + len(new_classes)))
        for c in self.memory:
            self.memory[c] = self.memory[c][:quota]
        added: list[tuple[int, int]] = []
        if self.selection == "random":
            rng = np.random.RandomState(derived_seed(self.seed, 7919, e))
            for c in new_classes:
                idx = np.flatnonzero(targets == c)
                chosen = rng.choice(idx, size=min(quota, len(idx)), replace=False)
                self.memory[c] = [(e, int(i)) for i in chosen]
                added += self.memory[c]
            return added
        data = evaluation_items(exp)  # no augmentation: PyCIL's mode='test'
        for c in new_classes:
            idx = np.flatnonzero(targets == c)
            feats, _ = embed_items(strategy, data, idx)
            order = selection_order(self.selection, feats)[:quota]
            self.memory[c] = [(e, int(idx[i])) for i in order]
            added += self.memory[c]
        return added

    def state_dict(self) -> dict[str, Any]:
        """The stored pairs, as plain values."""
        return {"memory": {c: list(v) for c, v in self.memory.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.memory = {int(c): [(int(p[0]), int(p[1])) for p in v]
                       for c, v in state["memory"].items()}


class StoredItems:
    """Stored (experience, index) pairs read as one dataset: item i is the i-th pair's
    image under the TRAIN transform (re-augmented, as Mammoth re-augments buffer inputs)
    and its label. ``stream`` is the experience's ``origin_stream``."""

    def __init__(self, stream: Any, pairs: Sequence[tuple[int, int]]) -> None:
        self.pairs = [(int(e), int(i)) for e, i in pairs]
        self._sets: dict[int, Any] = {}
        self._stream = stream

    def __len__(self) -> int:
        return len(self.pairs)

    def _set(self, e: int) -> Any:
        if e not in self._sets:
            self._sets[e] = self._stream[e].dataset.train()
        return self._sets[e]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        e, j = self.pairs[i]
        item = self._set(e)[j]
        return item[0], int(item[1])

    def targets(self) -> list[int]:
        """The label of every pair (read from the datasets' targets, no image decoded)."""
        return [int(self._set(e).targets[j]) for e, j in self.pairs]


class BufferStrategy:
    """Mixin of strategies with an exemplar buffer (``mem_size``): the check of the
    buffer's size against the stream, made before any training.

    A buffer larger than the data seen is refused where the stream's sizes are known (the
    preflight of ``lrbench run`` and ``lrbench tune``): "the data seen" is every train
    image of every experience but the last, the most a buffer can ever hold when it is
    used (it is filled from experiences 0 to T-2 and replayed in 1 to T-1). A buffer that
    large stores everything: joint training under another name. Outside the preflight
    (the Python API, the contract kit) a larger buffer simply holds all it has seen.
    """

    @classmethod
    def stream_problem(cls, config: StrategyConfig, train_images: Sequence[int]
                       ) -> str | None:
        """Why a buffer of ``config.mem_size`` cannot run on a stream whose experiences
        hold ``train_images`` train images each (None: it can)."""
        seen = int(sum(train_images[:-1]))
        size = int(getattr(config, "mem_size", 0))
        if len(train_images) > 1 and size > seen:
            return (f"mem_size {size} is larger than the data the buffer can have seen "
                    f"({seen} train images in the experiences before the last): it would "
                    f"store everything, which is joint training; use mem_size <= {seen}")
        return None
