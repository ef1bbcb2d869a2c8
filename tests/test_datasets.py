"""Every loader reads its original layout, built here as a tiny fixture tree."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from conftest import truncate, write_image

from benchmarks.datasets import (
    CUB200,
    DATASETS,
    FGVCAircraft,
    Flowers102,
    ImageFolderDataset,
    Omniglot,
    StanfordCars,
    StanfordDogs,
    SynthFG,
    check_images,
    get_dataset,
)
from benchmarks.errors import LrbenchError


# -- fixture trees ------------------------------------------------------------------------
def make_cub(root: Path, class_ids=(3, 7, 12), per_class=4) -> Path:
    """CUB layout with non-contiguous class ids; first half of each class is train."""
    cub = root / "CUB_200_2011"
    images, labels, split, classes = [], [], [], []
    image_id = 1
    for cid in class_ids:
        folder = f"{cid:03d}.Bird_{cid}"
        classes.append(f"{cid} {folder}")
        for k in range(per_class):
            rel = f"{folder}/Bird_{cid}_{k:04d}.jpg"
            write_image(cub / "images" / rel, seed=image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            split.append(f"{image_id} {1 if k < per_class // 2 else 0}")
            image_id += 1
    for name, rows in (("images.txt", images), ("image_class_labels.txt", labels),
                       ("train_test_split.txt", split), ("classes.txt", classes)):
        (cub / name).write_text("\n".join(rows) + "\n")
    return cub


def make_flowers_folder(root: Path) -> Path:
    base = root / "flowers102"
    for split, n in (("train", 3), ("valid", 1), ("test", 2)):
        for label in (1, 2, 10):
            for k in range(n):
                write_image(base / split / str(label) / f"image_{label:03d}{k}{split[:2]}.jpg",
                            seed=label * 10 + k)
    (base / "cat_to_name.json").write_text('{"1": "pink primrose", "2": "orchid", "10": "thistle"}')
    return base


def make_flowers_torchvision(root: Path) -> Path:
    base = root / "flowers-102"
    labels = [1, 1, 2, 2, 3, 3, 1, 2, 3]
    for i in range(1, len(labels) + 1):
        write_image(base / "jpg" / f"image_{i:05d}.jpg", seed=i)
    sio.savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    sio.savemat(base / "setid.mat", {"trnid": np.array([[1, 3, 5]]), "valid": np.array([[2, 4, 6]]),
                                     "tstid": np.array([[7, 8, 9]])})
    return base


def make_cars(root: Path) -> Path:
    base = root / "stanford_cars"
    dt = [("fname", "O"), ("class", "O")]
    for split, mat in (("train", base / "devkit" / "cars_train_annos.mat"),
                       ("test", base / "cars_test_annos_withlabels.mat")):
        rows = []
        for k, cls in enumerate((1, 2, 2, 3)):
            fname = f"{k:05d}.jpg"
            write_image(base / f"cars_{split}" / fname, seed=k)
            rows.append((fname, cls))
        mat.parent.mkdir(parents=True, exist_ok=True)
        sio.savemat(mat, {"annotations": np.array([rows], dtype=dt)})
    names = np.empty((1, 3), dtype=object)
    names[0, :] = ["AM General Hummer", "Acura RL", "Audi TT"]
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    return base


def make_aircraft(root: Path) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A320", "Cessna 172"]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    k = 0
    for split in ("train", "val", "test"):
        rows = []
        for v in variants:
            name = f"{1000000 + k}"
            write_image(data / "images" / f"{name}.jpg", seed=k)
            rows.append(f"{name} {v}")
            k += 1
        (data / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
    return root / "fgvc-aircraft-2013b"


def make_dogs(root: Path) -> Path:
    base = root / "StanfordDogs"
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    for split in ("train", "test"):
        files, labels = [], []
        for label, breed in enumerate(breeds, 1):
            for k in range(2):
                rel = f"{breed}/{breed.split('-')[0]}_{split}{k}.jpg"
                write_image(base / "Images" / rel, seed=label * 7 + k)
                files.append(rel)
                labels.append(label)
        cell = np.empty((len(files), 1), dtype=object)
        for i, f in enumerate(files):
            cell[i, 0] = np.array([f])
        (base / "lists").mkdir(parents=True, exist_ok=True)
        sio.savemat(base / "lists" / f"{split}_list.mat",
                    {"file_list": cell, "labels": np.array(labels).reshape(-1, 1)})
    return base


def make_omniglot(root: Path) -> Path:
    base = root / "omniglot" / "images_background"
    for alphabet in ("Greek", "Latin"):
        for c in (1, 2):
            for drawer in range(1, 21):
                write_image(base / alphabet / f"character{c:02d}" / f"{c:04d}_{drawer:02d}.png",
                            seed=drawer, mode="L")
    return root / "omniglot"


# -- loaders ------------------------------------------------------------------------------
def test_cub_non_contiguous_ids_and_splits(tmp_path):
    root = make_cub(tmp_path)
    train = CUB200(root, "train")
    test = CUB200(root, "test")
    assert train.class_ids == [3, 7, 12] and train.num_classes == 3
    assert train.classes[0] == "003.Bird_3"
    assert len(train) == 6 and len(test) == 6
    assert sorted(set(train.targets)) == [0, 1, 2] == sorted(set(test.targets))
    img, label = train[0]
    assert img.mode == "RGB" and label == 0
    assert CUB200(root, "all").split_counts == {"train": 6, "test": 6}
    # parent folder of several datasets works too, and so does a class subset
    assert len(CUB200(tmp_path, "train", class_subset=[7])) == 2



@pytest.mark.parametrize("damage, needle", [
    (lambda t: t.replace(" 0\n", " 7\n", 1), "flag '7'; the official flags are 1"),
    (lambda t: t + t.splitlines()[0] + "\n", "lists image id 1 twice"),
])
def test_cub_split_flags_are_checked(tmp_path, damage, needle):
    """Only 1 (training image) and 0 (test image) are flags; a duplicate id is an error."""
    root = make_cub(tmp_path)
    split = root / "train_test_split.txt"
    split.write_text(damage(split.read_text()))
    with pytest.raises(LrbenchError, match=needle.replace("(", r"\(")):
        CUB200(root)


def test_cub_missing_index_file_names_it(tmp_path):
    root = make_cub(tmp_path)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(LrbenchError, match="train_test_split.txt.*missing.*Expected layout"):
        CUB200(root)


def test_cub_malformed_line_names_file_and_line(tmp_path):
    root = make_cub(tmp_path)
    with open(root / "image_class_labels.txt", "a") as fh:
        fh.write("99\n")
    with pytest.raises(LrbenchError, match="image_class_labels.txt line 13"):
        CUB200(root)


def test_bad_root_is_one_line_with_layout_and_url(tmp_path):
    with pytest.raises(LrbenchError) as err:
        CUB200(tmp_path / "nope")
    msg = str(err.value)
    assert "\n" not in msg and "does not exist" in msg and "data.caltech.edu" in msg


def test_flowers_imagefolder_layout(tmp_path):
    root = make_flowers_folder(tmp_path)
    ds = Flowers102(root, "train")
    assert ds.class_ids == [1, 2, 10] and ds.classes == ["pink primrose", "orchid", "thistle"]
    assert len(ds) == 9
    assert len(Flowers102(tmp_path, "trainval")) == 12
    assert Flowers102(root, "all").split_counts == {"train": 9, "valid": 3, "test": 6}


def test_flowers_torchvision_layout(tmp_path, monkeypatch):
    from torchvision.datasets import Flowers102 as TV

    # torchvision checks the .mat files against the official MD5s; ours are fixtures.
    monkeypatch.setattr(TV, "_check_integrity", lambda self: True)
    make_flowers_torchvision(tmp_path)
    ds = Flowers102(tmp_path, "all")
    assert ds.split_counts == {"train": 3, "valid": 3, "test": 3}
    assert ds.class_ids == [1, 2, 3] and ds.classes[0] == "pink primrose"
    test = Flowers102(tmp_path / "flowers-102", "test")
    assert [Path(p).name for p, _ in test.samples] == [
        "image_00007.jpg", "image_00008.jpg", "image_00009.jpg"]
    assert test.targets == [0, 1, 2]


def test_flowers_torchvision_layout_checksum_failure_is_clear(tmp_path):
    make_flowers_torchvision(tmp_path)  # fixture .mat files fail torchvision's MD5 check
    with pytest.raises(LrbenchError, match="torchvision rejected"):
        Flowers102(tmp_path)


def test_cars_torchvision_layout(tmp_path):
    make_cars(tmp_path)
    ds = StanfordCars(tmp_path, "train")
    assert len(ds) == 4 and ds.targets == [0, 1, 1, 2]
    assert ds.classes == ["AM General Hummer", "Acura RL", "Audi TT"]
    assert StanfordCars(tmp_path / "stanford_cars", "all").split_counts == {"train": 4, "test": 4}


def test_cars_missing_annotations(tmp_path):
    base = make_cars(tmp_path)
    (base / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(LrbenchError, match="cars_test_annos_withlabels.mat"):
        StanfordCars(tmp_path)


def test_aircraft_torchvision_layout(tmp_path):
    make_aircraft(tmp_path)
    ds = FGVCAircraft(tmp_path, "trainval")
    assert len(ds) == 6 and ds.classes == ["707-320", "A320", "Cessna 172"]
    assert FGVCAircraft(tmp_path, "all").split_counts == {"train": 3, "valid": 3, "test": 3}


def test_dogs_layout(tmp_path):
    root = make_dogs(tmp_path)
    train = StanfordDogs(root, "train")
    assert len(train) == 4 and train.targets == [0, 0, 1, 1]
    assert train.classes == ["Chihuahua", "Japanese_spaniel"]
    assert train[3][0].size == (12, 12)
    (root / "lists" / "test_list.mat").unlink()
    with pytest.raises(LrbenchError, match="test_list.mat.*missing"):
        StanfordDogs(root)


def test_omniglot_split_by_drawer(tmp_path):
    make_omniglot(tmp_path)
    train = Omniglot(tmp_path, "train")  # found inside the data root
    test = Omniglot(tmp_path / "omniglot", "test")
    assert train.num_classes == 4 and train.classes[0] == "Greek/character01"
    assert len(train) == 4 * 15 and len(test) == 4 * 5
    assert all(Path(p).stem.endswith(("_16", "_17", "_18", "_19", "_20")) for p, _ in test.samples)
    img, _ = test[0]
    assert img.mode == "RGB"
    custom = Omniglot(tmp_path, "test", test_drawers=[1])
    assert len(custom) == 4


def test_imagefolder_both_layouts(tmp_path):
    flat = tmp_path / "flat"
    for c in ("a", "b"):
        for k in range(4):
            write_image(flat / c / f"{k}.png", seed=k)
    ds = ImageFolderDataset(flat, "train")
    assert ds.classes == ["a", "b"] and len(ds) == 4
    assert len(ImageFolderDataset(flat, "test")) == 4
    assert len(ImageFolderDataset(flat, "test", test_fraction=0.25)) == 2
    split = tmp_path / "split"
    for s in ("train", "test"):
        for c in ("x", "y", "z"):
            write_image(split / s / c / "0.jpg")
    assert len(ImageFolderDataset(split, "test")) == 3


def test_empty_tree_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrbenchError, match="no images found"):
        ImageFolderDataset(tmp_path / "empty")


def test_truncated_jpeg_is_reported(tmp_path):
    root = make_cub(tmp_path)
    ds = CUB200(root, "all")
    broken = Path(ds.samples[2][0])
    truncate(broken)
    assert [p for p, _ in check_images(ds, progress=False)] == [str(broken)]
    with pytest.raises(LrbenchError, match="cannot decode image"):
        ds[2]


def test_unknown_split_and_name():
    with pytest.raises(LrbenchError, match="unknown split"):
        SynthFG(split="validation")
    with pytest.raises(LrbenchError, match="Did you mean 'cub200'"):
        get_dataset("cub20")


def test_root_from_environment(tmp_path, monkeypatch):
    make_cub(tmp_path)
    monkeypatch.setenv("LRBENCH_DATA", str(tmp_path))
    assert len(CUB200(None, "test")) == 6
    monkeypatch.delenv("LRBENCH_DATA")
    with pytest.raises(LrbenchError, match="LRBENCH_DATA"):
        CUB200(None)


def test_download_failure_names_url_and_layout(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(LrbenchError) as err:
        CUB200(tmp_path / "CUB_200_2011", download=True)
    msg = str(err.value)
    assert "CUB_200_2011.tgz" in msg and "network is unreachable" in msg and "images.txt" in msg
    with pytest.raises(LrbenchError, match="ImageNetDogs/images.tar"):
        StanfordDogs(tmp_path / "dogs", download=True)
    with pytest.raises(LrbenchError, match="automatic download is not available"):
        StanfordCars(tmp_path / "cars", download=True)


def test_every_registered_loader_has_the_uniform_signature():
    import inspect

    for name, cls in DATASETS.items():
        params = list(inspect.signature(cls.__init__).parameters)[1:5]
        assert params == ["root", "split", "transform", "download"], name


# -- real data (skips when ../shared/data is absent) -------------------------------------
@pytest.mark.realdata
def test_real_cub_subset(shared_data):
    ds = CUB200(shared_data / "CUB_200_2011", "all")
    assert ds.num_classes == 100 and len(ds) == 5902
    # the official split (1 = training image): 30 training images for 99 of the 100 classes
    assert ds.split_counts == {"train": 2999, "test": 2903}
    per_class = Counter(CUB200(shared_data, "train").targets)
    assert sorted(Counter(per_class.values()).items()) == [(29, 1), (30, 99)]
    img, label = CUB200(shared_data, "test")[0]
    assert img.size == (227, 227) and label == 0


@pytest.mark.realdata
def test_real_flowers_and_omniglot(shared_data):
    flowers = Flowers102(shared_data / "flowers102", "all")
    assert flowers.num_classes == 102
    assert flowers.split_counts == {"train": 6552, "valid": 818, "test": 819}
    omni = Omniglot(shared_data, "all")
    assert omni.num_classes == 242 and len(omni) == 4840
    assert omni.split_counts == {"train": 3630, "test": 1210}


def test_16_bit_png_keeps_its_range(tmp_path):
    """A 16-bit grey PNG reads as 8-bit RGB scaled from 0..65535 (value >> 8), not clipped
    to white as PIL's own conversion would do."""
    from PIL import Image

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    for cls in ("a", "b"):
        for i in range(4):
            path = tmp_path / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ramp).save(path)
    with Image.open(tmp_path / "a" / "0.png") as raw:
        assert raw.mode.startswith("I")  # really a wide image
        clipped = np.asarray(raw.convert("RGB"))
    assert (clipped == 255).mean() > 0.9  # what a plain conversion gives
    img, _ = ImageFolderDataset(tmp_path, "train")[0]
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (64, 64, 3)
    np.testing.assert_array_equal(arr[..., 0], (ramp.astype(np.int64) * 255 // 65535))
    assert arr.min() == 0 and arr.max() == 255 * 65520 // 65535
