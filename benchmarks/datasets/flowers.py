"""Oxford Flowers-102: torchvision's layout, or a plain ``{train,valid,test}/<label>/`` tree."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record
from benchmarks.datasets.download import torchvision_download
from benchmarks.datasets.imagefolder import IMAGE_EXTENSIONS, list_images

_TV_SPLITS = {"train": "train", "valid": "val", "test": "test"}


class Flowers102(ImageListDataset):
    """Oxford Flowers-102 in either of its common layouts.

    * torchvision's: ``flowers-102/{jpg/, imagelabels.mat, setid.mat}`` (the official files;
      ``root`` may be ``flowers-102`` itself or its parent), parsed by torchvision's class.
    * ImageFolder: ``{train,valid,test}/<label 1..102>/*.jpg`` with an optional
      ``cat_to_name.json`` (the layout of ../shared/data).

    Splits ``train``, ``valid``, ``test``, ``trainval`` and ``all``. Class ids are the
    official labels 1..102.
    """

    name = "flowers102"
    layout = (
        "flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat} (torchvision) or "
        "flowers102/{train,valid,test}/<label>/*.jpg"
    )
    url = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    physical_splits = ("train", "valid", "test")
    split_aliases = {"trainval": ("train", "valid")}
    folder_names = ("flowers102", "flowers-102", "flowers")

    def _torchvision_root(self) -> Path | None:
        for base in (self.root, self.root / "flowers-102"):
            if (base / "imagelabels.mat").is_file() or (base / "setid.mat").is_file():
                return base
        return None

    def _looks_present(self) -> bool:
        return self._torchvision_root() is not None or (self.root / "train").is_dir()

    def download(self) -> None:
        from torchvision.datasets import Flowers102 as TVFlowers

        torchvision_download(
            self.name, lambda: TVFlowers(str(self.root), split="test", download=True),
            self.url, self.layout,
        )

    @classmethod
    def find_in(cls, data_root: Path) -> Path | None:
        for folder in cls.folder_names:
            cand = data_root / folder
            if (cand / "train").is_dir() or (cand / "setid.mat").is_file() or (
                cand / "imagelabels.mat"
            ).is_file():
                return cand
        return None

    def build_index(self) -> DatasetIndex:
        if (self.root / "train").is_dir():
            return self._index_imagefolder()
        tv_root = self._torchvision_root()
        if tv_root is None:
            raise self.missing(f"neither train/ nor setid.mat+imagelabels.mat under {self.root}")
        return self._index_torchvision(tv_root)

    def _index_imagefolder(self) -> DatasetIndex:
        names: dict[int, str] = {}
        names_file = self.root / "cat_to_name.json"
        if names_file.is_file():
            with open(names_file, encoding="utf-8") as fh:
                names = {int(k): v for k, v in json.load(fh).items()}
        records = []
        for split in self.physical_splits:
            split_dir = self.root / split
            if not split_dir.is_dir():
                raise self.missing(f"split folder {str(split_dir)!r} is missing")
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                try:
                    class_id = int(class_dir.name)
                except ValueError:
                    raise self.missing(
                        f"class folder {class_dir.name!r} is not a label number 1..102"
                    ) from None
                for path in list_images(class_dir, IMAGE_EXTENSIONS):
                    records.append(Record(str(path), class_id, split))
        return DatasetIndex(records, names)

    def _index_torchvision(self, tv_root: Path) -> DatasetIndex:
        from torchvision.datasets import Flowers102 as TVFlowers

        for fname in ("imagelabels.mat", "setid.mat"):
            if not (tv_root / fname).is_file():
                raise self.missing(f"index file {str(tv_root / fname)!r} is missing")
        if not (tv_root / "jpg").is_dir():
            raise self.missing(f"image folder {str(tv_root / 'jpg')!r} is missing")
        records = []
        for split, tv_split in _TV_SPLITS.items():
            # torchvision's parser of the official .mat files (labels there are 0-based);
            # it also checks the .mat files' MD5 against the official ones.
            try:
                tv = TVFlowers(str(tv_root.parent), split=tv_split, download=False)
            except RuntimeError as exc:
                raise self.missing(f"torchvision rejected {str(tv_root)!r} ({exc})") from None
            for path, label in zip(tv._image_files, tv._labels, strict=True):
                records.append(Record(str(path), int(label) + 1, split))
        names = dict(enumerate(TVFlowers.classes, 1))
        return DatasetIndex(records, names)
