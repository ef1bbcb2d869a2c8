"""Class-incremental and lifelong streams as Avalanche benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.datasets import SynthFG
from benchmarks.errors import LrbenchError
from benchmarks.protocols import PROTOCOLS, build_protocol, get_protocol
from benchmarks.streams import class_incremental, class_order, lifelong, parse_schedule


@pytest.mark.parametrize("text, counts", [
    ("100+4x25", [100, 25, 25, 25, 25]),
    ("100+100", [100, 100]),
    ("50+5x10", [50, 10, 10, 10, 10, 10]),
    ("4x25", [25, 25, 25, 25]),
    (" 10 + 2x5 ", [10, 5, 5]),
    ([50, 20, 30], [50, 20, 30]),
])
def test_parse_schedule(text, counts):
    assert parse_schedule(text) == counts


@pytest.mark.parametrize("bad", ["", "100+", "10x", "a+b", "100+0", "0x10", [], [5, -1]])
def test_bad_schedules(bad):
    with pytest.raises(LrbenchError, match="schedule"):
        parse_schedule(bad)


def test_class_order():
    assert class_order(4) == [0, 1, 2, 3]
    perm = class_order(10, 7)
    assert sorted(perm) == list(range(10)) and perm == class_order(10, 7) != class_order(10, 8)
    with pytest.raises(LrbenchError):
        class_order(3, [0, 0, 1])


def _synth_pair(**kw):
    kw = {"num_classes": 12, "train_per_class": 4, "test_per_class": 2, **kw}
    return SynthFG(split="train", **kw), SynthFG(split="test", **kw)


def test_class_incremental_experiences_are_class_disjoint():
    bench = class_incremental(_synth_pair(), "4+2x4")
    assert len(bench.train_stream) == 3 == len(bench.test_stream)
    seen: set[int] = set()
    for exp_train, exp_test in zip(bench.train_stream, bench.test_stream, strict=True):
        train_labels = set(exp_train.dataset.targets)
        assert train_labels == set(exp_test.dataset.targets) == exp_train.classes_in_this_experience
        assert not train_labels & seen
        seen |= train_labels
    info = bench.stream_info
    assert [e.num_classes for e in info.experiences] == [4, 4, 4]
    assert [e.train_images for e in info.experiences] == [16, 16, 16]
    assert info.experiences[1].labels == [4, 5, 6, 7]
    x, y, task = bench.train_stream[1].dataset[0]
    assert y == 4 and task == 0 and tuple(x.size) == (32, 32)


def test_seeded_order_relabels_in_order_of_appearance():
    train, test = _synth_pair()
    bench = class_incremental((train, test), "6+6", order=3)
    first = bench.stream_info.experiences[0]
    assert first.labels == list(range(6))
    assert first.class_ids == class_order(12, 3)[:6]
    # each relabeled item is the original image, its label the class's position in the order
    order = class_order(12, 3)
    chunk = order[:6]
    indices = sorted(i for i, t in enumerate(train.targets) if t in chunk)
    ds = bench.train_stream[0].dataset
    assert len(ds) == len(indices)
    for k in (0, 5, len(ds) - 1):
        img, label, _ = ds[k]
        orig_img, orig_label = train[indices[k]]
        assert np.array_equal(np.asarray(img), np.asarray(orig_img))
        assert label == chunk.index(orig_label)


def test_schedule_larger_than_dataset():
    with pytest.raises(LrbenchError, match="needs 13 classes but .* has 12"):
        class_incremental(_synth_pair(), "10+3")


def test_partial_schedule_uses_first_classes():
    bench = class_incremental(_synth_pair(), "3+3")
    assert sum(e.num_classes for e in bench.stream_info.experiences) == 6


def test_lifelong_offsets_labels():
    pairs = [_synth_pair(domain=d, num_classes=n) for d, n in
             (("birds", 5), ("flowers", 3), ("glyphs", 4))]
    bench = lifelong(pairs)
    labels = [set(exp.dataset.targets) for exp in bench.test_stream]
    assert labels == [set(range(0, 5)), set(range(5, 8)), set(range(8, 12))]
    assert labels == [set(exp.dataset.targets) for exp in bench.train_stream]


def test_lifelong_by_name_and_unknown_name():
    bench = lifelong(["synth-fg:birds", "synth-fg:glyphs"], image_size=32)
    assert [e.dataset for e in bench.stream_info.experiences] == ["synth-fg:birds",
                                                                   "synth-fg:glyphs"]
    with pytest.raises(LrbenchError, match="unknown dataset 'omniglott'.*omniglot"):
        lifelong(["synth-fg", "omniglott"])
    with pytest.raises(LrbenchError):
        lifelong([])


def test_synth_protocols_build():
    for name in ("synth-ci", "synth-lifelong"):
        bench = build_protocol(name)
        assert len(bench.train_stream) == len(get_protocol(name).datasets) or name == "synth-ci"
    assert len(build_protocol("synth-ci").train_stream) == 5
    with pytest.raises(LrbenchError, match="Did you mean"):
        get_protocol("synth-cj")


def test_thesis_protocols_present():
    schedules = {p.schedule for p in PROTOCOLS.values()}
    assert {"100+100", "100+4x25", "60+60", "60+4x15", "100+4x24", "62+4x10",
            "50+5x10"} <= schedules


@pytest.mark.realdata
def test_real_cub_subset_stream(shared_data):
    bench = class_incremental("cub200", "50+5x10", root=shared_data / "CUB_200_2011")
    exps = bench.stream_info.experiences
    assert [e.num_classes for e in exps] == [50, 10, 10, 10, 10, 10]
    assert sum(e.train_images for e in exps) + sum(e.test_images for e in exps) == 5902
    assert sum(e.train_images for e in exps) == 2999  # the official split
    x, y, _ = bench.test_stream[5].dataset[0]
    assert tuple(x.shape) == (3, 224, 224) and 90 <= y < 100


@pytest.mark.realdata
def test_real_lifelong_stream(shared_data):
    bench = build_protocol("lifelong-flowers-cub-omniglot", root=shared_data)
    exps = bench.stream_info.experiences
    assert [e.num_classes for e in exps] == [102, 100, 242]
    label_sets = [set(exp.dataset.targets) for exp in bench.test_stream]
    assert not (label_sets[0] & label_sets[1] or label_sets[1] & label_sets[2]
                or label_sets[0] & label_sets[2])
    x, y, _ = bench.test_stream[2].dataset[0]
    assert x.shape[0] == 3 and y >= 202  # Omniglot is binary, loaded as RGB


def test_validation_split_holds_out_train_images_per_class():
    from benchmarks.streams import validation_split
    from benchmarks.transforms import retrieval_transforms

    train, test = _synth_pair(train_per_class=10)
    train.transform = retrieval_transforms(32, True, True)
    test.transform = retrieval_transforms(32, False, True)
    kept, held = validation_split(train, test, 0.2)
    assert set(kept.samples).isdisjoint(held.samples)
    assert sorted(kept.samples + held.samples) == sorted(train.samples)
    assert all(path.split("/")[3] == "train" for path, _ in held.samples)  # never the test split
    assert [held.targets.count(c) for c in range(12)] == [2] * 12
    assert held.transform is test.transform and kept.transform is train.transform
    assert held.classes == train.classes
    # the held-out images are the very train images, drawn the same way every time
    i = held.samples.index(held.samples[5])
    j = train.samples.index(held.samples[5])
    assert np.array_equal(np.asarray(held.load_image(i)), np.asarray(train.load_image(j)))
    assert validation_split(train, test, 0.2)[1].samples == held.samples
    # a class with two images keeps one for training and holds one out
    small, _ = _synth_pair(train_per_class=2)
    kept, held = validation_split(small, small, 0.2)
    assert [held.targets.count(c) for c in range(12)] == [1] * 12 == [
        kept.targets.count(c) for c in range(12)]
    with pytest.raises(LrbenchError, match="between 0 and 1"):
        validation_split(train, test, 1.5)


def test_validation_stream_evaluates_on_held_out_train_images():
    seen = []

    def record(train, test, image_size, generated):
        seen.append((train, test))
        return train, test

    bench = class_incremental(_synth_pair(train_per_class=10), "6+6", validation=0.3)
    assert [len(e.dataset) for e in bench.test_stream] == [18, 18]
    info = class_incremental("synth-fg", "6+6", validation=0.3, wrap=record, info_only=True,
                             dataset_kwargs={"num_classes": 12, "train_per_class": 10,
                                             "test_per_class": 2})
    assert [e.train_images for e in info.experiences] == [42, 42]
    assert [e.test_images for e in info.experiences] == [18, 18]
    (train, test), = seen
    assert all("/train/" in p for p, _ in train.samples + test.samples)


def test_validation_is_part_of_a_scenario_and_its_hash():
    from benchmarks.config import expand_cells, parse_config

    raw = {"name": "v", "seeds": [0], "strategies": {"finetune": {}},
           "scenarios": [{"name": "s", "dataset": "synth-fg", "schedule": "6+6"}]}
    plain = expand_cells(parse_config(raw, registries=False))[0]
    assert "validation" not in plain.as_dict()["scenario"]  # unset: old stores' hashes hold
    raw["scenarios"][0]["validation"] = 0.2
    val = expand_cells(parse_config(raw, registries=False))[0]
    assert val.as_dict()["scenario"]["validation"] == 0.2 and val.hash != plain.hash
    raw["scenarios"][0]["validation"] = 1.0
    with pytest.raises(LrbenchError, match="validation"):
        parse_config(raw, registries=False)
