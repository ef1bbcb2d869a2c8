"""Omniglot: ``<alphabet>/<character>/<id>_<drawer>.png``, one class per character."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record
from benchmarks.datasets.download import torchvision_download
from benchmarks.errors import LrbenchError

_SUBSETS = ("images_background", "images_evaluation", "images_background_small1",
            "images_background_small2")


class Omniglot(ImageListDataset):
    """Omniglot characters as classes, split by drawer (each character has 20 drawers).

    ``root`` may hold alphabets directly, or the subset folders ``images_background`` /
    ``images_evaluation`` (both are read), or torchvision's ``omniglot-py/``. A file
    ``0394_17.png`` was drawn by drawer 17; drawers in ``test_drawers`` (default 16..20, a
    quarter) form the test split. Binary images are converted to RGB when loaded.
    """

    name = "omniglot"
    layout = "omniglot/[images_background/]<alphabet>/<character>/<id>_<drawer>.png"
    url = "https://github.com/brendenlake/omniglot"
    folder_names = ("omniglot", "omniglot-py")

    def __init__(
        self,
        root: Any = None,
        split: str = "train",
        transform: Any = None,
        download: bool = False,
        target_transform: Any = None,
        test_drawers: Iterable[int] = range(16, 21),
    ) -> None:
        self.test_drawers = {int(d) for d in test_drawers}
        super().__init__(root, split, transform, download, target_transform)

    @classmethod
    def resolve_root(cls, root: Path) -> Path:
        if any((root / s).is_dir() for s in _SUBSETS):
            return root
        return cls.find_in(root) or root

    def _alphabet_roots(self) -> list[Path]:
        roots = [self.root / s for s in _SUBSETS if (self.root / s).is_dir()]
        tv = self.root / "omniglot-py"
        roots += [tv / s for s in _SUBSETS if (tv / s).is_dir()]
        return roots or [self.root]

    def _looks_present(self) -> bool:
        return self.root.is_dir() and any(self.root.iterdir())

    def download(self) -> None:
        from torchvision.datasets import Omniglot as TVOmniglot

        for background in (True, False):
            torchvision_download(
                self.name,
                lambda b=background: TVOmniglot(str(self.root), background=b, download=True),
                self.url, self.layout,
            )

    def build_index(self) -> DatasetIndex:
        records = []
        for base in self._alphabet_roots():
            for alphabet in sorted(p for p in base.iterdir() if p.is_dir()):
                for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                    class_id = f"{alphabet.name}/{char.name}"
                    for png in sorted(char.glob("*.png")):
                        records.append(Record(str(png), class_id, self._split_of(png)))
        if not records:
            raise self.missing(f"no <alphabet>/<character>/*.png under {str(self.root)!r}")
        return DatasetIndex(records)

    def _split_of(self, png: Path) -> str:
        try:
            drawer = int(png.stem.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            raise LrbenchError(
                f"omniglot: file name {png.name!r} is not <id>_<drawer>.png, so its drawer "
                f"(and split) is unknown; rename it or use the 'imagefolder' loader"
            ) from None
        return "test" if drawer in self.test_drawers else "train"
