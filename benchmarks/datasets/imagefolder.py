"""Any ImageFolder tree: ``<split>/<class>/*`` or ``<class>/*`` with a deterministic split."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record
from benchmarks.errors import LrbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def list_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (deterministic order)."""
    exts = tuple(e.lower() for e in extensions)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def interleaved_test(n: int, test_fraction: float) -> list[bool]:
    """Mark about ``test_fraction`` of ``n`` ordered items as test, spread evenly.

    Item i is test when floor((i+1) f) > floor(i f): deterministic, needs no seed, and every
    class with at least ``1/f`` images gets both splits.
    """
    return [int((i + 1) * test_fraction) > int(i * test_fraction) for i in range(n)]


class ImageFolderDataset(ImageListDataset):
    """A generic tree of class folders.

    With split folders (``train/<class>/*``, ``test/<class>/*``, optionally ``val/`` or
    ``valid/``) they are used as given. Without them (``<class>/*``), each class's sorted
    files are split into train and test with ``test_fraction`` (default 0.5, the usual
    retrieval protocol), interleaved so the split needs no seed.
    """

    name = "imagefolder"
    layout = "<root>/<class>/<image> or <root>/{train,test}/<class>/<image>"
    physical_splits = ("train", "valid", "test")
    split_aliases = {"trainval": ("train", "valid")}

    def __init__(
        self,
        root: Any = None,
        split: str = "train",
        transform: Any = None,
        download: bool = False,
        target_transform: Any = None,
        test_fraction: float = 0.5,
    ) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise LrbenchError(f"imagefolder: test_fraction must be in (0, 1), got {test_fraction}")
        self.test_fraction = test_fraction
        super().__init__(root, split, transform, download, target_transform)

    def build_index(self) -> DatasetIndex:
        split_dirs = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}
        present = {d.name: split_dirs[d.name] for d in self.root.iterdir()
                   if d.is_dir() and d.name in split_dirs}
        records: list[Record] = []
        if "train" in present and "test" in present.values():
            for folder, split in present.items():
                for class_dir in sorted(p for p in (self.root / folder).iterdir() if p.is_dir()):
                    for path in list_images(class_dir):
                        records.append(Record(str(path), class_dir.name, split))
        else:
            for class_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
                files = list_images(class_dir)
                for path, is_test in zip(
                    files, interleaved_test(len(files), self.test_fraction), strict=True
                ):
                    split = "test" if is_test else "train"
                    records.append(Record(str(path), class_dir.name, split))
        return DatasetIndex(records)
