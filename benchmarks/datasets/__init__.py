"""Dataset loaders, one per file, all with the signature ``(root, split, transform, download)``.

``DATASETS`` maps the names used on the command line and in configs to their classes;
:func:`get_dataset` builds one split and :func:`load_splits` the train/test pair a stream needs.
"""

from __future__ import annotations

from typing import Any

from benchmarks.datasets.aircraft import FGVCAircraft
from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record, check_images
from benchmarks.datasets.cars import StanfordCars
from benchmarks.datasets.cub import CUB200
from benchmarks.datasets.dogs import StanfordDogs
from benchmarks.datasets.flowers import Flowers102
from benchmarks.datasets.imagefolder import ImageFolderDataset
from benchmarks.datasets.omniglot import Omniglot
from benchmarks.datasets.synth import DOMAINS, SynthFG
from benchmarks.errors import unknown_name

DATASETS: dict[str, type] = {
    "cub200": CUB200,
    "cars196": StanfordCars,
    "aircraft": FGVCAircraft,
    "flowers102": Flowers102,
    "dogs": StanfordDogs,
    "omniglot": Omniglot,
    "imagefolder": ImageFolderDataset,
    "synth-fg": SynthFG,
}

SUMMARIES: dict[str, str] = {
    "cub200": "CUB-200-2011 birds, official layout, any subset of the 200 class ids",
    "cars196": "Stanford Cars-196, torchvision layout",
    "aircraft": "FGVC-Aircraft-2013b (variant/family/manufacturer), torchvision layout",
    "flowers102": "Oxford Flowers-102, torchvision layout or {train,valid,test}/<label>/",
    "dogs": "Stanford Dogs-120, Images/ + lists/{train,test}_list.mat",
    "omniglot": "Omniglot characters, <alphabet>/<character>/*.png, split by drawer",
    "imagefolder": "any <class>/<image> or <split>/<class>/<image> tree",
    "synth-fg": "generated fine-grained species (domains: birds, flowers, glyphs); no files",
}


def dataset_class(name: str) -> type:
    """The loader class registered under ``name`` (a close-match hint when unknown)."""
    base, _, _ = name.partition(":")
    if base not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[base]


def get_dataset(name: str, root: Any = None, split: str = "train", **kwargs: Any) -> Any:
    """Build split ``split`` of dataset ``name``.

    ``synth-fg:<domain>`` selects a synth-fg domain (e.g. ``synth-fg:glyphs``).
    """
    cls = dataset_class(name)
    base, _, domain = name.partition(":")
    if base == "synth-fg" and domain:
        kwargs.setdefault("domain", domain)
    return cls(root, split=split, **kwargs)


def load_splits(
    name: str,
    root: Any = None,
    train_transform: Any = None,
    eval_transform: Any = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """The (train, test) pair of dataset ``name``, each with its own transform."""
    train = get_dataset(name, root, "train", transform=train_transform, **kwargs)
    test = get_dataset(name, root, "test", transform=eval_transform, **kwargs)
    return train, test


__all__ = [
    "CUB200", "DATASETS", "DOMAINS", "DatasetIndex", "FGVCAircraft", "Flowers102",
    "ImageFolderDataset", "ImageListDataset", "Omniglot", "Record", "StanfordCars",
    "StanfordDogs", "SUMMARIES", "SynthFG", "check_images", "dataset_class", "get_dataset",
    "load_splits",
]
