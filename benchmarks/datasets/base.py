"""Common base of every dataset loader: an index of (image, class, split) records.

Every loader, real or generated, has the torchvision signature
``Dataset(root, split="train", transform=None, download=False)`` and exposes the same
attributes, so streams, the CLI and the trainers never special-case a dataset:

* ``samples``: list of ``(path, label)`` for the chosen split;
* ``targets``: the labels alone (what Avalanche reads to build class-incremental streams);
* ``classes``: class names, ``classes[label]``;
* ``class_ids``: the dataset's own class ids (CUB's 1..200 ids, Flowers' 1..102 labels, ...).

Labels are contiguous ``0..C-1`` over the classes *present* in the index, ordered by the
dataset's own class id: a CUB subset with ids {1, 4, 7, ...} gets labels {0, 1, 2, ...},
and the same class keeps the same label in every split.

A loader only implements :meth:`ImageListDataset.build_index`, which parses the original
on-disk layout. Parsing never decodes an image: counting a dataset is cheap.
"""

from __future__ import annotations

import copy
import io
import os
import stat
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from benchmarks.errors import LrbenchError


@dataclass(frozen=True)
class Record:
    """One image of the index: its file, its dataset-native class id and its split."""

    path: str
    class_id: Any
    split: str


@dataclass
class DatasetIndex:
    """What a loader's parser returns: every record of every split plus class names."""

    records: list[Record]
    class_names: dict[Any, str] = field(default_factory=dict)


def _sort_key(class_id: Any) -> tuple[int, Any]:
    # Numeric ids sort numerically, strings lexically, numbers before strings.
    return (0, class_id) if isinstance(class_id, int) else (1, str(class_id))


class LabelledImages(Dataset):
    """``(image, target)`` items: ``load_image(i)`` and ``targets[i]`` through the transforms.

    Shared by the real-image loaders and the generated synth-fg data.
    """

    transform: Callable[[Any], Any] | None = None
    target_transform: Callable[[int], Any] | None = None
    targets: list[int]

    def load_image(self, index: int) -> Any:
        """The ``index``-th image as a PIL image."""
        raise NotImplementedError

    def select(self, indices: Sequence[int]) -> LabelledImages:
        """A copy holding only the images at ``indices`` (labels, classes and transforms
        unchanged): how validation splits and skipped files cut a split."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img = self.load_image(index)
        target: Any = self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


class ImageListDataset(LabelledImages):
    """Base class of the real-image loaders (see the module docstring)."""

    #: name used on the command line and in configs
    name: ClassVar[str] = ""
    #: one line describing the expected on-disk layout, quoted in errors
    layout: ClassVar[str] = ""
    #: where the official files live, quoted in errors
    url: ClassVar[str] = ""
    #: physical split names present in the index
    physical_splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: extra split names that are unions of physical splits
    split_aliases: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: folder names under which this dataset is found inside a data root
    folder_names: ClassVar[tuple[str, ...]] = ()
    #: a file or folder (relative to the dataset root) whose presence marks the layout
    marker: ClassVar[str] = ""

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        download: bool = False,
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        if root is None:
            root = os.environ.get("LRBENCH_DATA")
            if root is None:
                raise LrbenchError(
                    f"{self.name}: no dataset root given; pass --root PATH (or root=...) or set "
                    f"$LRBENCH_DATA. Expected layout: {self.layout}"
                )
        self.root = self.resolve_root(Path(root).expanduser())
        self.transform = transform
        self.target_transform = target_transform
        self.split = self._check_split(split)
        if download and not self._looks_present():
            self.download()
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise self.missing(f"dataset root {str(self.root)!r} {what}")
        index = self.build_index()
        self._set_index(index)

    # -- to implement -----------------------------------------------------------------
    def build_index(self) -> DatasetIndex:
        """Parse the original layout under ``self.root`` (no image is decoded)."""
        raise NotImplementedError

    def _looks_present(self) -> bool:
        """Whether the files seem to be there already (skips a needless download)."""
        return self.root.is_dir() and any(self.root.iterdir())

    def download(self) -> None:
        """Fetch the official files, verified by checksum; an error when not possible."""
        raise LrbenchError(
            f"{self.name}: automatic download is not available; get the files from "
            f"{self.url} and lay them out as: {self.layout}"
        )

    # -- shared machinery -------------------------------------------------------------
    @classmethod
    def all_splits(cls) -> tuple[str, ...]:
        """Every split name this loader accepts."""
        return (*cls.physical_splits, *cls.split_aliases, "all")

    def _check_split(self, split: str) -> str:
        if split not in self.all_splits():
            raise LrbenchError(
                f"{self.name}: unknown split {split!r}; use one of {', '.join(self.all_splits())}"
            )
        return split

    def _selected(self) -> tuple[str, ...]:
        if self.split == "all":
            return self.physical_splits
        return self.split_aliases.get(self.split, (self.split,))

    @classmethod
    def resolve_root(cls, root: Path) -> Path:
        """The dataset's own folder: ``root`` itself, or a known sub-folder of a data root."""
        if cls.marker and (root / cls.marker).exists():
            return root
        return cls.find_in(root) or root

    @classmethod
    def find_in(cls, data_root: Path) -> Path | None:
        """Locate this dataset inside a folder of datasets by its known folder names."""
        for folder in cls.folder_names:
            candidate = data_root / folder
            if candidate.is_dir() and (not cls.marker or (candidate / cls.marker).exists()):
                return candidate
        return None

    def missing(self, what: str) -> LrbenchError:
        """The one-line error for a missing or malformed file of the layout."""
        hint = f" Official files: {self.url}." if self.url else ""
        return LrbenchError(f"{self.name}: {what}. Expected layout: {self.layout}.{hint}")

    def _set_index(self, index: DatasetIndex) -> None:
        if not index.records:
            raise self.missing(f"no images found under {str(self.root)!r}")
        ids = sorted({r.class_id for r in index.records}, key=_sort_key)
        label_of = {cid: i for i, cid in enumerate(ids)}
        self.class_ids: list[Any] = ids
        self.classes: list[str] = [str(index.class_names.get(c, c)) for c in ids]
        self.split_counts: dict[str, int] = dict(Counter(r.split for r in index.records))
        wanted = set(self._selected())
        self.samples: list[tuple[str, int]] = [
            (r.path, label_of[r.class_id]) for r in index.records if r.split in wanted
        ]
        self.targets: list[int] = [label for _, label in self.samples]

    @property
    def num_classes(self) -> int:
        """Number of classes in the whole dataset (every split)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Any:
        """Decode image ``index`` as RGB; a broken file is a one-line error naming it."""
        from PIL import Image

        path = self.samples[index][0]
        try:
            with Image.open(path) as img:
                return to_rgb(img)
        except (*DECODE_ERRORS, Image.DecompressionBombError) as exc:
            raise LrbenchError(
                f"{self.name}: cannot decode image {path!r} ({exc}); check the dataset with "
                f"'lrbench data check {self.name} --root {self.root}' and replace the file"
            ) from None

    def select(self, indices: Sequence[int]) -> ImageListDataset:
        out = copy.copy(self)
        out.samples = [self.samples[i] for i in indices]
        out.targets = [label for _, label in out.samples]
        return out

    def without(self, paths: Collection[str]) -> ImageListDataset:
        """A copy without the images at ``paths`` (relative to the root), labels unchanged:
        how ``lrbench run --skip-corrupt`` leaves broken files out."""
        drop = set(paths)
        return self.select([i for i, (path, _) in enumerate(self.samples)
                            if os.path.relpath(path, self.root) not in drop])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"images={len(self)}, classes={self.num_classes})"
        )


#: what PIL raises for a file it cannot decode (with ``Image.DecompressionBombError``, an
#: image of more than twice ``Image.MAX_IMAGE_PIXELS`` pixels: a decompression bomb)
DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError)

#: PIL modes of one channel wider than 8 bits (16-bit PNGs open as one of them)
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(img: Any) -> Any:
    """``img`` as 8-bit RGB. A 16-bit (or 32-bit integer) grey image is scaled to 8 bits
    first: PIL's own conversion clips it, so a 16-bit PNG would read as almost all white."""
    from PIL import Image

    if img.mode in WIDE_MODES:
        arr = np.asarray(img, dtype=np.int64)
        top = 65535 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        arr = np.clip(arr, 0, top) * 255 // top
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    return img.convert("RGB")


def read_table(path: Path, dataset: ImageListDataset, columns: int) -> list[list[str]]:
    """Read a whitespace-separated index file; a missing or malformed one is a clear error."""
    if not path.is_file():
        raise dataset.missing(f"index file {str(path)!r} is missing")
    rows = []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise dataset.missing(f"{path.name} is not UTF-8 text (byte {exc.start}); restore the "
                              "official file") from None
    for lineno, line in enumerate(io.StringIO(text, newline=None), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns:
            raise dataset.missing(
                f"{path.name} line {lineno} has {len(parts)} fields, expected {columns}"
            )
        rows.append(parts)
    return rows


def check_images(
    dataset: Sequence[Any] | ImageListDataset, progress: bool = True
) -> list[tuple[str, str]]:
    """Decode every image of ``dataset`` fully; return ``(path, reason)`` of broken files.

    A truncated JPEG opens fine and fails only when its pixels are read, so this decodes each
    file completely. Used by ``lrbench data check`` before a long run.
    """
    from PIL import Image
    from tqdm import tqdm

    bad = []
    samples = dataset.samples  # type: ignore[union-attr]
    for path, _ in tqdm(samples, desc=f"checking {len(samples)} images", disable=not progress,
                        unit="img", leave=False):
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the decoder
                bad.append((path, "not a regular file"))
                continue
            with Image.open(path) as img:
                img.load()
        except (*DECODE_ERRORS, Image.DecompressionBombError) as exc:
            bad.append((path, str(exc) or type(exc).__name__))
    return bad
