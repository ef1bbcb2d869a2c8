"""On-disk caches that make real-image matrices practical on a CPU.

* :class:`ImageCache`: every image decoded and resized **once** per dataset and resolution
  into a memory-mapped ``uint8`` array (N x S x S x 3, S = the eval resize side); training
  augmentation then runs on tensors (:func:`tensor_transforms`), not on JPEG files.
* :func:`stem_feature_cache`: with a frozen stem (``EmbeddingNet(frozen_stages=k)``), the
  stem's output for every image and *view* is computed once and memory-mapped; training and
  evaluation run only the trained rest of the network. Views are fixed crops: the centre
  crop, its mirror image, then seeded random resized crops (``views`` in all); a training
  item draws one view at random (torch's RNG, so seeded runs repeat), a test item is the
  centre crop.

Entries are keyed by a SHA-256 of what determines their content (the image files' bytes,
the resolution, the views, the stem's weights), written atomically, and shared between
processes (a lock file per entry: two workers never compute the same entry twice). The
folder is ``$LRBENCH_CACHE``, else ``~/.cache/lrbench``; deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import Dataset

from benchmarks.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize
from metrics.io import atomic_write

#: bump when the stored layout or the view recipe changes: old entries are then ignored
CACHE_VERSION = 1


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``path``, else ``$LRBENCH_CACHE``, else ``~/.cache/lrbench``."""
    chosen = path or os.environ.get("LRBENCH_CACHE") or Path.home() / ".cache" / "lrbench"
    return Path(chosen).expanduser()


def fingerprint(dataset: Any) -> str:
    """SHA-256 of what a dataset's images are: their files' bytes (real data), or the
    generator's parameters (synth-fg renders the same images from the same parameters)."""
    h = hashlib.sha256(type(dataset).__name__.encode())
    samples = getattr(dataset, "samples", None) or []
    if samples and Path(samples[0][0]).is_file():
        root = Path(getattr(dataset, "root", None) or "/")
        for path, label in samples:
            p = Path(path)
            rel = p.relative_to(root) if p.is_relative_to(root) else p
            h.update(f"{rel}\0{label}\0".encode())
            h.update(p.read_bytes())
        return h.hexdigest()
    h.update(json.dumps([list(s) for s in samples], default=str).encode())
    params = {k: v for k, v in sorted(vars(dataset).items())
              if not k.startswith("_") and k not in ("root", "transform", "target_transform")
              and isinstance(v, int | float | str | bool | dict | list | tuple | type(None))}
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _key(*parts: Any) -> str:
    text = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # an OS lock (filelock: fcntl here, msvcrt on Windows), released even on a crash
    with FileLock(path.with_name(path.name + ".lock")):
        yield


def _cached_array(path: Path, shape: tuple[int, ...], dtype: Any,
                  fill: Callable[[np.ndarray], None]) -> np.ndarray:
    """The array stored at ``path``, computing it with ``fill`` on first use (atomically)."""
    with _entry_lock(path):
        if not path.is_file():
            def write(tmp: Path) -> None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                fill(out)
                out.flush()
                del out

            atomic_write(path, write)
    # copy-on-write: tensors view the pages without a copy (nothing here writes to them,
    # and a write would stay in this process, never reach the file)
    arr = np.load(path, mmap_mode="c")
    if arr.shape != shape:  # a foreign file under our key: recompute rather than trust it
        path.unlink()
        return _cached_array(path, shape, dtype, fill)
    return arr


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=None)


# -- decoded images -----------------------------------------------------------------------
def stored_side(image_size: int, generated: bool) -> int:
    """Side of the stored square: the eval resize (256/224 of the crop) for real images,
    the native size for generated ones (which are used as they are)."""
    return image_size if generated else eval_resize(image_size)


class ImageCache:
    """Decoded, resized images of one dataset at one resolution, memory-mapped.

    ``array[i]`` is image i as ``S x S x 3`` uint8: resized so the short side is S, then
    centre-cropped to a square (real images); generated images are stored as rendered.
    """

    def __init__(self, dataset: Any, image_size: int, generated: bool = False,
                 root: str | os.PathLike[str] | None = None) -> None:
        self.dataset, self.image_size, self.generated = dataset, image_size, generated
        self.side = stored_side(image_size, generated)
        key = _key("images", fingerprint(dataset), self.side, generated)
        self.path = cache_dir(root) / "images" / f"{key}.npy"
        self.array = _cached_array(self.path, (len(dataset), self.side, self.side, 3),
                                   np.uint8, self._fill)

    def _fill(self, out: np.ndarray) -> None:
        from PIL import Image

        name = getattr(self.dataset, "name", type(self.dataset).__name__)
        with _progress(len(out), f"decoding {name} once") as bar:
            for i in range(len(out)):
                img = self.dataset.load_image(i).convert("RGB")
                if img.size != (self.side, self.side):
                    w, h = img.size
                    scale = self.side / min(w, h)
                    img = img.resize((max(self.side, round(w * scale)),
                                      max(self.side, round(h * scale))),
                                     Image.Resampling.BILINEAR)
                    left = (img.size[0] - self.side) // 2
                    top = (img.size[1] - self.side) // 2
                    img = img.crop((left, top, left + self.side, top + self.side))
                out[i] = np.asarray(img, dtype=np.uint8)
                bar.update(1)

    def tensor(self, i: int) -> torch.Tensor:
        """Image i as a ``3 x S x S`` uint8 tensor."""
        return torch.from_numpy(self.array[i]).permute(2, 0, 1)


class TensorTransform:
    """The stream transforms (``benchmarks.transforms``) on cached ``3 x S x S`` uint8 tensors.

    Train: random resized crop (scale 0.5-1, aspect 3/4-4/3, torchvision's sampling) with
    antialiased bilinear resizing, horizontal flip with probability 0.5; eval: centre crop.
    Then ImageNet normalisation. Written out rather than composed from ``transforms.v2``:
    per image, the composition's dispatch cost more than the arithmetic (1.7 ms vs 0.9 ms).
    The crop is resized as a uint8 view in the cache's HWC layout (torch's channels-last
    uint8 kernel, no copy), and normalisation is one multiply-subtract; 0.4 ms per image.
    Random draws come from torch's generator, so seeded runs repeat.
    """

    def __init__(self, image_size: int, train: bool, generated: bool = False) -> None:
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as TF

        self._crop_params, self._center_crop = RandomResizedCrop.get_params, TF.center_crop
        self.size, self.train, self.generated = image_size, train, generated
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        # (x / 255 - mean) / std as x * scale - shift
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        s = self.size
        if not self.generated:
            if self.train:
                top, left, h, w = self._crop_params(img, (0.5, 1.0), (3 / 4, 4 / 3))
                img = torch.nn.functional.interpolate(
                    img[None, :, top:top + h, left:left + w], size=(s, s), mode="bilinear",
                    align_corners=False, antialias=True)[0]
            else:
                img = self._center_crop(img, [s, s])
        if self.train and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img.float().mul_(self.scale).sub_(self.shift)


def tensor_transforms(image_size: int, train: bool, generated: bool = False) -> TensorTransform:
    """The stream transforms on cached uint8 tensors (see :class:`TensorTransform`)."""
    return TensorTransform(image_size, train, generated)


def _keep_attributes(wrapper: Dataset, base: Any) -> None:
    """Give a cached view the attributes streams read from its dataset."""
    for attr in ("targets", "classes", "class_ids", "name"):
        if hasattr(base, attr):
            setattr(wrapper, attr, getattr(base, attr))


class CachedImages(Dataset):
    """A dataset's items from its :class:`ImageCache`, through tensor transforms.

    Keeps the wrapped dataset's ``targets``, ``classes``, ``class_ids`` and ``name``.
    """

    def __init__(self, base: Any, cache: ImageCache, transform: Any) -> None:
        self.base, self.cache, self.transform = base, cache, transform
        _keep_attributes(self, base)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.cache.tensor(i)), self.targets[i]


# -- frozen-stem features -----------------------------------------------------------------
def view_tensors(images: ImageCache, i: int, views: int) -> torch.Tensor:
    """The ``views`` fixed crops of image i (V x 3 x s x s, normalised): centre, mirrored
    centre, then random resized crops seeded by the image index."""
    from torchvision.transforms import v2

    s = images.image_size
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    img = images.tensor(i)
    centre = v2.functional.center_crop(img, [s, s])
    out = [centre, v2.functional.horizontal_flip(centre)][:views]
    if len(out) < views:
        crop = v2.RandomResizedCrop(s, scale=(0.5, 1.0), antialias=True)
        state = torch.get_rng_state()
        torch.manual_seed(1_000_003 + i)
        try:
            for v in range(2, views):
                view = crop(img)
                out.append(v2.functional.horizontal_flip(view) if v % 2 else view)
        finally:
            torch.set_rng_state(state)
    return torch.stack([norm(v) for v in out])


def stem_key(model: torch.nn.Module) -> str:
    """SHA-256 of a model's frozen stem (its structure and weights), as the model gives it
    (``EmbeddingNet.stem_fingerprint``)."""
    return str(model.stem_fingerprint())


def stem_feature_cache(images: ImageCache, model: torch.nn.Module, views: int,
                       root: str | os.PathLike[str] | None = None,
                       batch_size: int = 64) -> np.ndarray:
    """``model``'s stem output for every image and view (N x V x C x H x W float32)."""
    s = images.image_size
    probe = model.stem_features(torch.zeros(1, 3, s, s))
    shape = (len(images.dataset), views, *probe.shape[1:])
    # the intra-op threads are in the key: features computed with another count may differ
    # in their last bits, and a cell's numbers must not depend on who filled its cache
    key = _key("stem", fingerprint(images.dataset), images.side, images.generated, s, views,
               stem_key(model), torch.get_num_threads())
    path = cache_dir(root) / "features" / f"{key}.npy"
    name = getattr(images.dataset, "name", type(images.dataset).__name__)

    def fill(out: np.ndarray) -> None:
        with _progress(len(out), f"{name}: stem features x {views} views, once") as bar:
            for start in range(0, len(out), batch_size):
                idx = range(start, min(start + batch_size, len(out)))
                x = torch.cat([view_tensors(images, i, views) for i in idx])
                out[start:start + len(idx)] = model.stem_features(x).reshape(
                    len(idx), views, *shape[2:]).numpy()
                bar.update(len(idx))

    return _cached_array(path, shape, np.float32, fill)


class CachedFeatures(Dataset):
    """Items ``(stem features of one view, label)`` from :func:`stem_feature_cache`.

    ``train=True`` draws a view uniformly per access (torch's RNG); otherwise view 0, the
    centre crop that evaluation uses. Keeps ``targets``, ``classes``, ``class_ids``, ``name``.
    """

    def __init__(self, base: Any, features: np.ndarray, train: bool) -> None:
        self.base, self.features, self.train = base, features, train
        _keep_attributes(self, base)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        v = int(torch.randint(self.features.shape[1], ())) if self.train else 0
        return torch.from_numpy(np.array(self.features[i, v])), self.targets[i]


def cached_pair(train: Any, test: Any, image_size: int, generated: bool, *,
                images: bool = False, model: torch.nn.Module | None = None, views: int = 2,
                root: str | os.PathLike[str] | None = None) -> tuple[Dataset, Dataset]:
    """Wrap a (train, test) pair of datasets in the caches asked for.

    With ``model`` (one with a frozen stem) both sides become :class:`CachedFeatures`;
    otherwise with ``images`` both become :class:`CachedImages`; otherwise they are
    returned unchanged.
    """
    if model is None and not images:
        return train, test
    caches = [ImageCache(d, image_size, generated, root) for d in (train, test)]
    if model is not None and model.frozen_stages:
        return (CachedFeatures(train, stem_feature_cache(caches[0], model, views, root), True),
                CachedFeatures(test, stem_feature_cache(caches[1], model, 1, root), False))
    return (CachedImages(train, caches[0], tensor_transforms(image_size, True, generated)),
            CachedImages(test, caches[1], tensor_transforms(image_size, False, generated)))
