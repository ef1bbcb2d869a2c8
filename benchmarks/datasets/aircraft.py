"""FGVC-Aircraft-2013b in torchvision's layout, parsed by torchvision's own class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record
from benchmarks.datasets.download import torchvision_download


class FGVCAircraft(ImageListDataset):
    """FGVC-Aircraft (100 variants by default), torchvision layout.

    ``annotation_level`` is ``variant`` (100 classes), ``family`` (70) or ``manufacturer``
    (30). Splits ``train``, ``valid``, ``test``, ``trainval``, ``all``.
    """

    name = "aircraft"
    layout = (
        "fgvc-aircraft-2013b/data/{images/, images_variant_{train,val,test}.txt, variants.txt}"
    )
    url = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
    physical_splits = ("train", "valid", "test")
    split_aliases = {"trainval": ("train", "valid")}
    folder_names = ("fgvc-aircraft-2013b", "aircraft")
    marker = "data"

    def __init__(
        self,
        root: Any = None,
        split: str = "train",
        transform: Any = None,
        download: bool = False,
        target_transform: Any = None,
        annotation_level: str = "variant",
    ) -> None:
        self.annotation_level = annotation_level
        super().__init__(root, split, transform, download, target_transform)

    def _tv_parent(self) -> Path:
        return self.root.parent if self.root.name == "fgvc-aircraft-2013b" else self.root

    def _looks_present(self) -> bool:
        return (self._tv_parent() / "fgvc-aircraft-2013b" / "data").is_dir()

    def download(self) -> None:
        from torchvision.datasets import FGVCAircraft as TVAircraft

        torchvision_download(
            self.name,
            lambda: TVAircraft(str(self._tv_parent()), split="test", download=True),
            self.url, self.layout,
        )

    def build_index(self) -> DatasetIndex:
        from torchvision.datasets import FGVCAircraft as TVAircraft

        data = self._tv_parent() / "fgvc-aircraft-2013b" / "data"
        level = self.annotation_level
        classes_file = {"variant": "variants.txt", "family": "families.txt",
                        "manufacturer": "manufacturers.txt"}.get(level)
        if classes_file is None:
            raise self.missing(f"unknown annotation_level {level!r}; use variant, family or "
                               "manufacturer")
        required = (classes_file, "images", *(f"images_{level}_{s}.txt"
                                                  for s in ("train", "val", "test")))
        for rel in required:
            if not (data / rel).exists():
                raise self.missing(f"{str(data / rel)!r} is missing")
        records, names = [], {}
        for split, tv_split in (("train", "train"), ("valid", "val"), ("test", "test")):
            try:
                tv = TVAircraft(str(self._tv_parent()), split=tv_split,
                                annotation_level=level, download=False)
            except (RuntimeError, KeyError, ValueError) as exc:
                raise self.missing(f"torchvision could not parse {str(data)!r} ({exc})") from None
            names = dict(enumerate(tv.classes))
            records += [Record(str(p), int(c), split)
                        for p, c in zip(tv._image_files, tv._labels, strict=True)]
        return DatasetIndex(records, names)
