"""synth-fg: deterministic, fine-grained by construction, three distinct domains."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.datasets import DOMAINS, SynthFG
from benchmarks.errors import LrbenchError


def test_same_seed_same_pixels_other_seed_other_pixels():
    a = SynthFG(split="test", seed=3).render(17)
    b = SynthFG(split="test", seed=3).render(17)
    c = SynthFG(split="test", seed=4).render(17)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_access_matches_sequential_order():
    ds = SynthFG(split="train", num_classes=8, train_per_class=3)
    ds = SynthFG(split="train", num_classes=8, train_per_class=3, cache=False)
    forward = [ds.render(i) for i in range(len(ds))]
    assert all(np.array_equal(ds.render(i), forward[i]) for i in reversed(range(len(ds))))


def test_shapes_labels_and_splits():
    ds = SynthFG(split="train", num_classes=12, train_per_class=5, test_per_class=2,
                 image_size=40)
    img, label = ds[7]
    assert img.size == (40, 40) and img.mode == "RGB" and label == 1
    assert len(ds) == 60 and ds.targets.count(0) == 5
    assert ds.split_counts == {"train": 60, "test": 24}
    assert len(SynthFG(split="all", num_classes=12, train_per_class=5, test_per_class=2)) == 84
    assert ds.classes[5] == "birds-g01-s1"
    # train and test images are different draws
    test = SynthFG(split="test", num_classes=12, train_per_class=5, test_per_class=2)
    assert not np.array_equal(ds.render(0), test.render(0))


def _class_means(ds: SynthFG, per_class: int) -> np.ndarray:
    imgs = np.stack([ds.render(i).astype(np.float32) for i in range(len(ds))])
    return imgs.reshape(ds.num_classes, per_class, -1).mean(1)


def test_siblings_are_closer_than_other_genera():
    """Fine-grained: species of one genus differ less than species of different genera."""
    for domain in DOMAINS:
        ds = SynthFG(split="train", domain=domain, num_classes=16, train_per_class=40)
        means = _class_means(ds, 40)
        d = np.linalg.norm(means[:, None] - means[None], axis=-1)
        genus = np.arange(16) // 4
        same = d[(genus[:, None] == genus[None]) & ~np.eye(16, dtype=bool)].mean()
        other = d[genus[:, None] != genus[None]].mean()
        assert same < 0.8 * other, domain


def test_siblings_still_differ():
    """Sibling species are distinguishable on average (their marks differ)."""
    ds = SynthFG(split="train", num_classes=4, train_per_class=60)
    means = _class_means(ds, 60)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(means[i] - means[j]).max() > 20, (i, j)


def test_domains_are_visually_distinct():
    stats = {}
    for domain in DOMAINS:
        ds = SynthFG(split="train", domain=domain, num_classes=8, train_per_class=10)
        imgs = np.stack([ds.render(i) for i in range(len(ds))]).astype(np.float32) / 255
        stats[domain] = (imgs.mean(axis=(0, 1, 2)), imgs.std())
    # glyphs: near-white grey paper; flowers: green dominates; birds: neither
    glyph_mean, _ = stats["glyphs"]
    assert glyph_mean.min() > 0.7 and np.ptp(glyph_mean) < 0.02
    flower_mean, _ = stats["flowers"]
    assert flower_mean[1] > flower_mean[0] + 0.1 and flower_mean[1] > flower_mean[2] + 0.1
    assert stats["birds"][0].min() < 0.7


def test_bad_arguments():
    with pytest.raises(LrbenchError, match="unknown domain"):
        SynthFG(domain="fish")
    with pytest.raises(LrbenchError, match="species_per_genus"):
        SynthFG(species_per_genus=9)
