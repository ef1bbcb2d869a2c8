"""CUB-200-2011 in its official layout; any subset of the 200 class ids."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record, read_table
from benchmarks.datasets.download import fetch_archive


class CUB200(ImageListDataset):
    """Caltech-UCSD Birds-200-2011, read from ``images.txt`` and its companion files.

    The class ids need not be contiguous (a subset such as ../shared/data's 100 classes
    works); ``class_subset`` keeps only the given CUB ids (e.g. ``range(1, 101)``).

    ``train_test_split.txt`` is read as the official README defines it: ``<image_id>
    <is_training_image>``, 1 = training image, 0 = test image; any other flag, or an image
    id listed twice in an index file, is a one-line error naming the file and line.
    """

    name = "cub200"
    layout = (
        "CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
        "images/<NNN.Name>/<file>.jpg}"
    )
    url = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
    md5 = "97eceeb196236b17998738112f37df78"
    folder_names = ("CUB_200_2011", "cub200", "CUB")
    marker = "images.txt"

    def __init__(
        self,
        root: Any = None,
        split: str = "train",
        transform: Any = None,
        download: bool = False,
        target_transform: Any = None,
        class_subset: Iterable[int] | None = None,
    ) -> None:
        self.class_subset = None if class_subset is None else {int(c) for c in class_subset}
        super().__init__(root, split, transform, download, target_transform)

    def _looks_present(self) -> bool:
        return (self.root / self.marker).is_file()

    def download(self) -> None:
        fetch_archive(self.name, self.url, self.md5, self.root.parent, self.layout)

    def build_index(self) -> DatasetIndex:
        root: Path = self.root
        images = self._by_id(root / "images.txt")
        labels = self._by_id(root / "image_class_labels.txt")
        is_train = self._by_id(root / "train_test_split.txt")
        for image_id, flag in is_train.items():
            if flag.strip() not in ("0", "1"):
                raise self.missing(
                    f"train_test_split.txt gives image id {image_id} the flag {flag.strip()!r}; "
                    "the official flags are 1 (training image) and 0 (test image)")
        names = {self._class_id(k, "classes.txt"): v.strip()
                 for k, v in read_table(root / "classes.txt", self, 2)}
        records = []
        for image_id, rel in images.items():
            if image_id not in labels or image_id not in is_train:
                raise self.missing(
                    f"image id {image_id} of images.txt is missing from "
                    "image_class_labels.txt or train_test_split.txt"
                )
            class_id = self._class_id(labels[image_id], "image_class_labels.txt", image_id)
            if self.class_subset is not None and class_id not in self.class_subset:
                continue
            split = "train" if is_train[image_id].strip() == "1" else "test"
            records.append(Record(str(root / "images" / rel.strip()), class_id, split))
        return DatasetIndex(records, names)

    def _class_id(self, text: str, file: str, image_id: str | None = None) -> int:
        """A class id of an index file: a positive integer, or a one-line error."""
        try:
            value = int(text.strip())
        except ValueError:
            value = 0
        if not 1 <= value <= 200:  # CUB-200 has 200 classes: 999 is no class of it
            of = f" for image id {image_id}" if image_id is not None else ""
            raise self.missing(f"{file} gives the class id {text.strip()[:40]!r}{of}; class ids "
                               "are positive integers (1..200)")
        return value

    def _by_id(self, path: Path) -> dict[str, str]:
        """An index file as ``image id -> value``; an id listed twice is an error (a
        dictionary would silently keep the last one and drop an image)."""
        out: dict[str, str] = {}
        for image_id, value in read_table(path, self, 2):
            if image_id in out:
                raise self.missing(f"{path.name} lists image id {image_id} twice; each id "
                                   "must appear once")
            out[image_id] = value
        return out
