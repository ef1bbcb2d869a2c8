"""Continual retrieval streams as Avalanche benchmarks.

* :func:`class_incremental`: one dataset, its classes split by a schedule such as
  ``"100+4x25"``; experience i's train set holds its classes' train images and its test set
  the same classes' test images.
* :func:`lifelong`: one experience per dataset, labels offset so they never collide.

Labels are renumbered in order of appearance: experience 0 holds labels ``0..B-1``, the next
``B..``, and so on (what a growing classifier needs). The original class ids and names are
kept in ``benchmark.stream_info`` (a :class:`StreamInfo`), which the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from benchmarks.datasets import dataset_class, get_dataset
from benchmarks.errors import LrbenchError
from benchmarks.schedule import parse_schedule  # re-exported: benchmarks.streams.parse_schedule
from benchmarks.transforms import retrieval_transforms


def class_order(num_classes: int, order: str | int | Sequence[int] = "sorted") -> list[int]:
    """Labels in the order they enter the stream: sorted, a seeded permutation, or given."""
    if isinstance(order, str):
        if order != "sorted":
            raise LrbenchError(f"bad class order {order!r}: use 'sorted', a seed or a list")
        return list(range(num_classes))
    if isinstance(order, int | np.integer):
        return [int(c) for c in np.random.default_rng(int(order)).permutation(num_classes)]
    out = [int(c) for c in order]
    if sorted(out) != sorted(set(out)) or not set(out) <= set(range(num_classes)):
        raise LrbenchError("bad class order: give distinct labels within the dataset's classes")
    return out


class RelabeledSubset(Dataset):
    """Images of ``base`` at ``indices``, their labels mapped through ``label_map``."""

    def __init__(self, base: Any, indices: Sequence[int], label_map: dict[int, int]) -> None:
        self.base = base
        self.indices = list(indices)
        self.label_map = label_map
        self.targets = [label_map[base.targets[i]] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x, _ = self.base[self.indices[i]]
        return x, self.targets[i]


@dataclass
class ExperienceInfo:
    """What one experience holds (labels are the stream's, ids and names the dataset's)."""

    index: int
    dataset: str
    num_classes: int
    train_images: int
    test_images: int
    labels: list[int]
    class_ids: list[Any]
    class_names: list[str] = field(repr=False)
    #: train and test images of each class, in ``labels`` order (what a P x K batch and a
    #: retrieval query need: K images of a class, another image of the query's class)
    train_per_class: list[int] = field(default_factory=list, repr=False)
    test_per_class: list[int] = field(default_factory=list, repr=False)


@dataclass
class StreamInfo:
    """The shape of a stream, without touching an image (printed by ``lrbench stream``)."""

    kind: str
    experiences: list[ExperienceInfo]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "experiences": [asdict(e) for e in self.experiences]}


def _as_avalanche(ds: Dataset) -> Any:
    from avalanche.benchmarks.utils import _make_taskaware_classification_dataset

    # task label 0 everywhere: class-incremental, not task-incremental (avoids Avalanche's
    # targets_task_labels trap with LwF).
    return _make_taskaware_classification_dataset(ds, task_labels=0)


def _benchmark(trains: list[Dataset], tests: list[Dataset], info: StreamInfo,
               eval_views: list[Dataset] | None = None) -> Any:
    """The Avalanche benchmark; its train stream carries ``eval_views``: per experience,
    its train images (same indices) read without augmentation (:func:`evaluation_view`),
    for strategies that compute features of the train set (herding, statistics)."""
    from avalanche.benchmarks import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline

    bench = with_classes_timeline(
        benchmark_from_datasets(
            train=[_as_avalanche(d) for d in trains], test=[_as_avalanche(d) for d in tests]
        )
    )
    bench.stream_info = info
    if eval_views is not None:
        bench.train_stream.eval_views = eval_views
    return bench


def evaluation_view(train: Any, test: Any) -> Any:
    """``train``'s images read the way ``test``'s are: a shallow copy with ``test``'s
    transform (no augmentation), or, for cached stem features, the centre view. The train
    sets carry their augmentation inside, which Avalanche's ``.eval()`` cannot remove."""
    import copy

    view = copy.copy(train)
    if isinstance(getattr(train, "train", None), bool):  # cached stem features
        view.train = False
    elif hasattr(train, "transform"):
        view.transform = getattr(test, "transform", None)
    return view


#: ``wrap(train, test, image_size, generated) -> (train, test)``: replaces a named dataset's
#: two splits before the stream is cut (the caches of ``benchmarks.run.cache`` use it)
Wrap = Callable[[Any, Any, int, bool], tuple[Any, Any]]


def validation_split(train: Any, test: Any, fraction: float, seed: int = 0
                     ) -> tuple[Any, Any]:
    """``(train minus held-out, held-out)``: ``fraction`` of each class's train images
    (a seeded draw, at least one, never all) become the evaluation side, with ``test``'s
    transform. Hyperparameters are chosen on this split; the test split stays unseen."""
    if not 0 < fraction < 1:
        raise LrbenchError(f"validation fraction {fraction} is not between 0 and 1; use e.g. 0.2")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    held: list[int] = []
    for _, idx in sorted(_indices_by_label(train.targets).items()):
        n = min(max(round(len(idx) * fraction), 1), len(idx) - 1)
        drawn = rng.permutation(idx)
        held += [int(i) for i in drawn[:n]]
        keep += [int(i) for i in drawn[n:]]
    val = train.select(sorted(held))
    val.transform = test.transform
    return train.select(sorted(keep)), val


def _pair(dataset: str | tuple[Any, Any], root: Any, image_size: int,
          dataset_kwargs: dict[str, Any] | None, wrap: Wrap | None = None,
          validation: float | None = None) -> tuple[str, Any, Any]:
    if isinstance(dataset, str):
        generated = dataset.partition(":")[0] == "synth-fg"
        kw = dict(dataset_kwargs or {})
        train = get_dataset(dataset, root, "train",
                            transform=retrieval_transforms(image_size, True, generated), **kw)
        test = get_dataset(dataset, root, "test",
                           transform=retrieval_transforms(image_size, False, generated), **kw)
        if validation:
            train, test = validation_split(train, test, validation)
        if wrap is not None:
            train, test = wrap(train, test, image_size, generated)
        return dataset, train, test
    train, test = dataset
    if validation:
        train, test = validation_split(train, test, validation)
    return getattr(train, "name", type(train).__name__), train, test


def _indices_by_label(targets: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        out.setdefault(int(t), []).append(i)
    return out


def _per_label(targets: Sequence[int], n: int) -> list[list[int]]:
    by = _indices_by_label(targets)
    return [by.get(c, []) for c in range(n)]


def class_incremental(
    dataset: str | tuple[Any, Any],
    schedule: str | Sequence[int],
    *,
    root: Any = None,
    order: str | int | Sequence[int] = "sorted",
    image_size: int = 224,
    dataset_kwargs: dict[str, Any] | None = None,
    wrap: Wrap | None = None,
    info_only: bool = False,
    validation: float | None = None,
) -> Any:
    """A class-incremental Avalanche benchmark over one dataset.

    ``dataset`` is a registered name (loaded from ``root`` with default transforms) or a
    ``(train, test)`` pair of datasets with ``targets`` and ``classes``. ``order`` is
    ``"sorted"`` (by class id), an int seed for a permutation, or an explicit label list.
    A schedule may use fewer classes than the dataset has (the first ones in ``order``).
    ``wrap`` replaces a named dataset's splits (e.g. by cached versions, see :data:`Wrap`).
    ``info_only`` returns the :class:`StreamInfo` alone (no Avalanche, nothing decoded).
    ``validation`` (a fraction) evaluates on held-out train images instead of the test
    split (:func:`validation_split`): the stream to tune hyperparameters on.
    """
    name, train, test = _pair(dataset, root, image_size, dataset_kwargs, wrap, validation)
    counts = parse_schedule(schedule)
    n_classes = len(train.classes)
    if sum(counts) > n_classes:
        raise LrbenchError(
            f"schedule {schedule!r} needs {sum(counts)} classes but {name} has {n_classes}; "
            f"use a schedule whose counts add up to at most {n_classes}"
        )
    labels = class_order(n_classes, order)
    train_by, test_by = _indices_by_label(train.targets), _indices_by_label(test.targets)
    train_eval = evaluation_view(train, test)
    trains, tests, exps, evals = [], [], [], []
    start = 0
    for i, count in enumerate(counts):
        chunk = labels[start:start + count]
        label_map = {c: start + j for j, c in enumerate(chunk)}
        tr_idx = sorted(k for c in chunk for k in train_by.get(c, []))
        te_idx = sorted(k for c in chunk for k in test_by.get(c, []))
        if not tr_idx or not te_idx:
            side = "train" if not tr_idx else "test"
            raise LrbenchError(
                f"experience {i} of schedule {schedule!r} on {name} has no {side} images; "
                "check the dataset's split or choose other classes"
            )
        trains.append(RelabeledSubset(train, tr_idx, label_map))
        tests.append(RelabeledSubset(test, te_idx, label_map))
        evals.append(RelabeledSubset(train_eval, tr_idx, label_map))
        exps.append(ExperienceInfo(
            i, name, len(chunk), len(tr_idx), len(te_idx), list(label_map.values()),
            [jsonable(train.class_ids[c]) for c in chunk], [train.classes[c] for c in chunk],
            [len(train_by.get(c, [])) for c in chunk], [len(test_by.get(c, [])) for c in chunk],
        ))
        start += count
    info = StreamInfo("class_incremental", exps)
    return info if info_only else _benchmark(trains, tests, info, evals)


def lifelong(
    datasets: Sequence[str | tuple[Any, Any]],
    *,
    root: Any = None,
    image_size: int = 224,
    dataset_kwargs: dict[str, dict[str, Any]] | None = None,
    wrap: Wrap | None = None,
    info_only: bool = False,
    validation: float | None = None,
) -> Any:
    """A lifelong (cross-dataset) Avalanche benchmark: one experience per dataset.

    Names are found under ``root`` by their folder names (``CUB_200_2011``, ``flowers102``,
    ``flowers-102``, ``omniglot``, ``omniglot-py``, ...). Labels of dataset k are offset by
    the class counts of datasets 0..k-1, so no label is shared between experiences.
    ``wrap``, ``info_only`` and ``validation``: as in :func:`class_incremental`.
    """
    if not datasets:
        raise LrbenchError("lifelong stream needs at least one dataset, e.g. flowers102,cub200")
    trains, tests, exps, evals = [], [], [], []
    offset = 0
    for i, spec in enumerate(datasets):
        kw = (dataset_kwargs or {}).get(spec, {}) if isinstance(spec, str) else {}
        if isinstance(spec, str):
            dataset_class(spec)  # unknown names fail before any loading
        name, train, test = _pair(spec, root, image_size, kw, wrap, validation)
        n = len(train.classes)
        label_map = {c: offset + c for c in range(n)}
        trains.append(RelabeledSubset(train, range(len(train)), label_map))
        tests.append(RelabeledSubset(test, range(len(test)), label_map))
        evals.append(RelabeledSubset(evaluation_view(train, test), range(len(train)),
                                     label_map))
        if not len(train) or not len(test):
            raise LrbenchError(f"dataset {name} in the lifelong stream has an empty split")
        exps.append(ExperienceInfo(
            i, name, n, len(train), len(test), list(label_map.values()),
            [jsonable(c) for c in train.class_ids], list(train.classes),
            [len(v) for v in _per_label(train.targets, n)],
            [len(v) for v in _per_label(test.targets, n)],
        ))
        offset += n
    info = StreamInfo("lifelong", exps)
    return info if info_only else _benchmark(trains, tests, info, evals)


def jsonable(value: Any) -> Any:
    """A class id as JSON can hold it (ints and strings as they are, others as text)."""
    return value if isinstance(value, int | str | float) else str(value)
