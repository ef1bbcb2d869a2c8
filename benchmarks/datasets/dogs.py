"""Stanford Dogs: ``Images/<wnid-Name>/*.jpg`` plus ``lists/{train,test}_list.mat``."""

from __future__ import annotations

from benchmarks.datasets.base import DatasetIndex, ImageListDataset, Record
from benchmarks.datasets.download import fetch_archive


class StanfordDogs(ImageListDataset):
    """Stanford Dogs (120 breeds), official layout; labels 1..120 as in the list files."""

    name = "dogs"
    layout = "StanfordDogs/{Images/<wnid>-<Breed>/*.jpg, lists/train_list.mat, lists/test_list.mat}"
    url = "http://vision.stanford.edu/aditya86/ImageNetDogs/"
    archives = (
        ("http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar",
         "1bb1f2a596ae7057f99d7d75860002ef"),
        ("http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar",
         "edbb9f16854ec66506b5f09b583e0656"),
    )
    folder_names = ("StanfordDogs", "stanford_dogs", "dogs")
    marker = "lists"

    def _looks_present(self) -> bool:
        return (self.root / "lists").is_dir() and (self.root / "Images").is_dir()

    def download(self) -> None:
        for url, md5 in self.archives:
            fetch_archive(self.name, url, md5, self.root, self.layout)

    def build_index(self) -> DatasetIndex:
        from scipy.io import loadmat

        records, names = [], {}
        for split in self.physical_splits:
            path = self.root / "lists" / f"{split}_list.mat"
            if not path.is_file():
                raise self.missing(f"index file {str(path)!r} is missing")
            try:
                mat = loadmat(str(path), squeeze_me=False)
                files = [str(f.flat[0]) for f in mat["file_list"].ravel()]
                labels = [int(x) for x in mat["labels"].ravel()]
            except (KeyError, ValueError, OSError) as exc:
                raise self.missing(f"cannot read {str(path)!r} ({exc})") from None
            for rel, label in zip(files, labels, strict=True):
                names.setdefault(label, rel.split("/")[0].split("-", 1)[-1])
                records.append(Record(str(self.root / "Images" / rel), label, split))
        return DatasetIndex(records, names)
