"""Stanford Cars-196 in torchvision's layout, parsed by torchvision's own class."""

from __future__ import annotations

from pathlib import Path

from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record


class StanfordCars(ImageListDataset):
    """Stanford Cars (196 classes), torchvision layout.

    ``root`` is ``stanford_cars`` itself or its parent. The official host is gone, so there
    is no automatic download: the error names the layout to reproduce.
    """

    name = "cars196"
    layout = (
        "stanford_cars/{cars_train/, cars_test/, devkit/cars_meta.mat, "
        "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat}"
    )
    url = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (host retired; mirrors exist)"
    folder_names = ("stanford_cars", "cars196", "cars")
    marker = "devkit"

    def _tv_parent(self) -> Path:
        return self.root.parent if self.root.name == "stanford_cars" else self.root

    def build_index(self) -> DatasetIndex:
        from torchvision.datasets import StanfordCars as TVCars

        base = self._tv_parent() / "stanford_cars"
        required = ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
                    "cars_test_annos_withlabels.mat", "cars_train", "cars_test")
        for rel in required:
            if not (base / rel).exists():
                raise self.missing(f"{str(base / rel)!r} is missing")
        records, names = [], {}
        for split in self.physical_splits:
            try:
                tv = TVCars(str(self._tv_parent()), split=split, download=False)
            except (RuntimeError, KeyError, ValueError, OSError) as exc:
                raise self.missing(f"torchvision could not parse {str(base)!r} ({exc})") from None
            names = dict(enumerate(tv.classes, 1))
            records += [Record(str(p), int(c) + 1, split) for p, c in tv._samples]
        return DatasetIndex(records, names)
