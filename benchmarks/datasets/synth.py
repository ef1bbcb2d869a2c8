"""``synth-fg``: a generated fine-grained dataset, the embedded default (no download).

Images of "species" grouped into genera. Siblings (species of one genus) share shape and
colour and differ only by subtle marks; which marks tell siblings apart depends on the genus,
so a model that learns the marks of new genera may drop those of old ones (forgetting is
visible). Every image also varies by nuisance factors: pose, scale, position, colour jitter,
background clutter and pixel noise.

Three visual domains make lifelong streams:

* ``birds``: an elliptic body with head and tail on a coloured gradient with clutter;
  marks: spot position, stripe count, shade, head colour.
* ``flowers``: radial petals on green foliage; marks: centre shade, tip dots, inner ring,
  petal veins.
* ``glyphs``: black strokes on paper (Omniglot-like); marks: dot position, hook, crossbar,
  stroke weight.

Generation is deterministic from ``(seed, domain, split, class, index)``, random-access (an
image is drawn when indexed, nothing is stored) and fast: several thousand 32 px images per
second on one core.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from benchmarks.datasets.base import LabelledImages
from benchmarks.errors import LrbenchError

DOMAINS: tuple[str, ...] = ("birds", "flowers", "glyphs")

# Attribute name -> number of values; genera pick two of them as their discriminating marks.
_ATTRS: dict[str, dict[str, int]] = {
    "birds": {"spot": 4, "stripes": 3, "shade": 2, "head": 2},
    "flowers": {"centre": 2, "tips": 2, "ring": 2, "veins": 2},
    "glyphs": {"dot": 4, "hook": 2, "bar": 2, "weight": 2},
}
_SPLIT_IDS = {"train": 0, "test": 1}


class SynthFG(LabelledImages):
    """Generated fine-grained images with the torchvision dataset signature.

    ``root`` and ``download`` are accepted for a uniform signature and ignored. Classes are
    ``num_classes`` species, ``species_per_genus`` per genus (at most 4), labelled
    ``genus * species_per_genus + species``. Splits: ``train``, ``test``, ``all``.
    """

    name: ClassVar[str] = "synth-fg"
    physical_splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(
        self,
        root: Any = None,
        split: str = "train",
        transform: Any = None,
        download: bool = False,
        target_transform: Any = None,
        domain: str = "birds",
        num_classes: int = 60,
        species_per_genus: int = 4,
        train_per_class: int = 40,
        test_per_class: int = 20,
        image_size: int = 32,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if domain not in DOMAINS:
            raise LrbenchError(f"synth-fg: unknown domain {domain!r}; use one of {DOMAINS}")
        if split not in (*self.physical_splits, "all"):
            raise LrbenchError(f"synth-fg: unknown split {split!r}; use train, test or all")
        if not 1 <= species_per_genus <= 4:
            raise LrbenchError("synth-fg: species_per_genus must be between 1 and 4")
        if num_classes < 1 or train_per_class < 1 or test_per_class < 1 or image_size < 16:
            raise LrbenchError(
                "synth-fg: num_classes, train_per_class and test_per_class must be >= 1 and "
                "image_size >= 16"
            )
        self.root = root
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.domain = domain
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.species_per_genus = species_per_genus
        self.per_class = {"train": train_per_class, "test": test_per_class}
        self.class_ids: list[int] = list(range(num_classes))
        self.classes: list[str] = [
            f"{domain}-g{c // species_per_genus:02d}-s{c % species_per_genus}"
            for c in self.class_ids
        ]
        self.split_counts = {s: n * num_classes for s, n in self.per_class.items()}
        splits = self.physical_splits if split == "all" else (split,)
        # (split id, class, index) of each image; the generator's key.
        self._keys = [(_SPLIT_IDS[s], c, i) for s in splits for c in self.class_ids
                      for i in range(self.per_class[s])]
        self.targets: list[int] = [c for _, c, _ in self._keys]
        self.samples: list[tuple[str, int]] = [
            (f"synth-fg://{domain}/{self.physical_splits[s]}/{c}/{i}", c)
            for s, c, i in self._keys
        ]
        self._species = self._make_species()
        # rendered images, kept after the first draw (3 KB each at 32 px); a stream's
        # strategies and epochs then share one drawing
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        lin = (np.arange(self.image_size, dtype=np.float32) + 0.5) / self.image_size * 2 - 1
        self._yy, self._xx = np.meshgrid(lin, lin, indexing="ij")

    @property
    def num_classes(self) -> int:
        """Number of classes (species)."""
        return len(self.class_ids)

    # -- class-level parameters ---------------------------------------------------------
    def _make_species(self) -> list[dict[str, Any]]:
        attrs = _ATTRS[self.domain]
        names = list(attrs)
        out: list[dict[str, Any]] = []
        n_genera = -(-self.num_classes // self.species_per_genus)
        dom = DOMAINS.index(self.domain)
        for g in range(n_genera):
            rng = np.random.default_rng([self.seed, dom, 7919, g])
            marks = [names[i] for i in sorted(rng.choice(len(names), 2, replace=False))]
            combos = list(itertools.product(*(range(attrs[m]) for m in marks)))
            rng.shuffle(combos)
            genus = {
                "hue": rng.uniform(0.15, 0.9, 3).astype(np.float32),
                "accent": rng.uniform(0.0, 1.0, 3).astype(np.float32),
                "shape": float(rng.uniform(0.0, 1.0)),
                "petals": int(rng.integers(5, 9)),
                "skeleton": rng.uniform(-0.6, 0.6, (3, 4)).astype(np.float32),
                "marks": marks,
            }
            for s in range(self.species_per_genus):
                if len(out) == self.num_classes:
                    break
                fixed = dict(zip(marks, combos[s % len(combos)], strict=True))
                out.append({**genus, "fixed": fixed})
        return out

    # -- rendering ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._keys)

    def select(self, indices: Sequence[int]) -> SynthFG:
        """A copy holding only the images at ``indices`` (same classes and transforms)."""
        out = copy.copy(self)
        out._keys = [self._keys[i] for i in indices]
        out.targets = [self.targets[i] for i in indices]
        out.samples = [self.samples[i] for i in indices]
        out._cache = {} if self._cache is not None else None  # its cache is by index
        return out

    def render(self, index: int) -> np.ndarray:
        """The ``index``-th image as an HxWx3 uint8 array (deterministic)."""
        if self._cache is not None:
            img = self._cache.get(index)
            if img is None:
                img = self._cache[index] = self._render(index)
            return img
        return self._render(index)

    def _render(self, index: int) -> np.ndarray:
        split_id, cls, i = self._keys[index]
        rng = np.random.default_rng([self.seed, DOMAINS.index(self.domain), split_id, cls, i])
        sp = self._species[cls]
        attrs = _ATTRS[self.domain]
        val = {a: sp["fixed"].get(a, int(rng.integers(attrs[a]))) for a in attrs}
        img = getattr(self, f"_draw_{self.domain}")(rng, sp, val)
        img += rng.normal(0.0, 0.05, img.shape).astype(np.float32)
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def _pose(self, rng: np.random.Generator, max_angle: float, scale: tuple[float, float]):
        theta = rng.uniform(-max_angle, max_angle)
        s = rng.uniform(*scale)
        cx, cy = rng.uniform(-0.18, 0.18, 2)
        dx, dy = self._xx - cx, self._yy - cy
        c, si = np.cos(theta), np.sin(theta)
        u = (dx * c + dy * si) / s
        v = (-dx * si + dy * c) / s
        return u, v

    def _clutter(self, rng: np.random.Generator, img: np.ndarray, n: int, palette: np.ndarray,
                 radius: tuple[float, float]) -> None:
        for _ in range(n):
            cx, cy = rng.uniform(-1, 1, 2)
            r = rng.uniform(*radius)
            m = (self._xx - cx) ** 2 + (self._yy - cy) ** 2 < r * r
            img[m] = palette + rng.uniform(-0.15, 0.15, 3)

    def _draw_birds(self, rng: np.random.Generator, sp: dict[str, Any], val: dict[str, int]):
        t = rng.uniform(0, 1)
        c0, c1 = rng.uniform(0.3, 0.9, 3), rng.uniform(0.3, 0.9, 3)
        img = (c0 * t + c1 * (1 - t) + (c1 - c0) * self._yy[..., None] * 0.3).astype(np.float32)
        self._clutter(rng, img, int(rng.integers(2, 6)), rng.uniform(0.2, 0.8, 3), (0.05, 0.18))
        u, v = self._pose(rng, np.pi / 5, (0.55, 0.85))
        if rng.random() < 0.5:
            u = -u  # facing left or right
        a = 0.7 + 0.2 * sp["shape"]
        b = 0.38 + 0.1 * (1 - sp["shape"])
        body = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        tail = (u < -0.75 * a) & (u > -a - 0.35) & (np.abs(v) < (-u - 0.75 * a) * 0.9 + 0.04)
        head = (u - 0.95 * a) ** 2 + (v + 0.6 * b) ** 2 <= 0.26**2
        jitter = rng.uniform(-0.05, 0.05, 3)
        shade = (0.72, 1.0)[val["shade"]]
        col = np.clip(sp["hue"] * shade + jitter, 0, 1)
        img[body | tail] = col
        img[head] = (col, np.clip(sp["accent"] * 0.5, 0, 1))[val["head"]]
        dark = col * 0.35
        n = val["stripes"] + 1
        for k in range(1, n + 1):
            uk = -0.6 * a + 1.2 * a * k / (n + 1)
            img[body & (np.abs(u - uk) < 0.055)] = dark
        phi = np.pi / 4 + val["spot"] * np.pi / 2
        su, sv = 0.5 * a * np.cos(phi), 0.55 * b * np.sin(phi)
        img[(u - su) ** 2 + (v - sv) ** 2 <= 0.14**2] = 1.0 - col
        return img

    def _draw_flowers(self, rng: np.random.Generator, sp: dict[str, Any], val: dict[str, int]):
        g = np.array([0.15, 0.45, 0.15]) + rng.uniform(-0.08, 0.08, 3)
        img = np.empty((*self._xx.shape, 3), np.float32)
        img[:] = g + 0.08 * np.sin(3 * self._xx + rng.uniform(0, 6))[..., None]
        self._clutter(rng, img, int(rng.integers(3, 7)), np.array([0.1, 0.35, 0.1]), (0.08, 0.25))
        u, v = self._pose(rng, np.pi, (0.6, 0.9))
        r = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        n = sp["petals"]
        petal_r = 0.55 + 0.4 * np.abs(np.cos(n * phi / 2)) ** (1.0 + sp["shape"])
        col = np.clip(sp["hue"] + rng.uniform(-0.05, 0.05, 3), 0, 1)
        flower = r <= petal_r
        img[flower] = col
        if val["veins"]:
            img[flower & (np.abs(np.sin(n * phi / 2)) < 0.08) & (r > 0.25)] = col * 0.5
        if val["ring"]:
            img[(np.abs(r - 0.42) < 0.05) & flower] = 1.0 - col
        if val["tips"]:
            tips = (np.abs(np.cos(n * phi / 2)) > 0.97) & (np.abs(r - 0.8) < 0.09)
            img[tips] = sp["accent"]
        centre = (0.35, 0.85)[val["centre"]]
        img[r < 0.22] = np.array([centre, centre * 0.8, 0.1], np.float32)
        return img

    def _draw_glyphs(self, rng: np.random.Generator, sp: dict[str, Any], val: dict[str, int]):
        ink = np.zeros(self._xx.shape, bool)
        u, v = self._pose(rng, np.pi / 10, (0.75, 1.0))
        width = (0.07, 0.11)[val["weight"]] + rng.uniform(-0.01, 0.01)
        segs = sp["skeleton"] + rng.uniform(-0.05, 0.05, sp["skeleton"].shape)
        for x0, y0, x1, y1 in segs:
            ink |= _segment(u, v, x0, y0, x1, y1) < width
        x0, y0, x1, y1 = segs[0]
        if val["hook"]:
            ink |= _segment(u, v, x1, y1, x1 + 0.2, y1 - 0.2) < width
        if val["bar"]:
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            ink |= _segment(u, v, mx - 0.15, my + 0.15, mx + 0.15, my - 0.15) < width
        dx, dy = ((0.65, 0.65), (-0.65, 0.65), (-0.65, -0.65), (0.65, -0.65))[val["dot"]]
        ink |= (u - dx) ** 2 + (v - dy) ** 2 < (width * 1.6) ** 2
        for _ in range(int(rng.integers(0, 4))):  # stray specks
            px, py = rng.uniform(-1, 1, 2)
            ink |= (self._xx - px) ** 2 + (self._yy - py) ** 2 < 0.03**2
        paper = 0.92 + rng.uniform(-0.05, 0.05)
        grey = np.where(ink, 0.08, paper).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2)

    # -- dataset protocol -----------------------------------------------------------------
    def load_image(self, index: int) -> Image.Image:
        """The ``index``-th image as a PIL image (see :meth:`render`)."""
        return Image.fromarray(self.render(index))

    def __repr__(self) -> str:
        return (
            f"SynthFG(domain={self.domain!r}, split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}, seed={self.seed})"
        )


def _segment(u: np.ndarray, v: np.ndarray, x0: float, y0: float, x1: float, y1: float):
    """Distance from every pixel (u, v) to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / max(dx * dx + dy * dy, 1e-8), 0.0, 1.0)
    return np.hypot(u - (x0 + t * dx), v - (y0 + t * dy))
