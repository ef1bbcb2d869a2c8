"""benchmarks.run.cache: decoded images once, frozen-stem features once, same numbers either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_image

from benchmarks.datasets.imagefolder import ImageFolderDataset
from benchmarks.datasets.synth import SynthFG
from benchmarks.run.cache import (
    CachedFeatures,
    CachedImages,
    ImageCache,
    cached_pair,
    stem_feature_cache,
    tensor_transforms,
    view_tensors,
)
from strategies.model import EmbeddingNet


@pytest.fixture()
def folder(tmp_path):
    for c in range(3):
        for i in range(4):
            write_image(tmp_path / "data" / f"class{c}" / f"{i}.png", seed=10 * c + i, size=40)
    return tmp_path / "data"


def test_image_cache_decodes_once_and_matches_pil(folder, tmp_path, monkeypatch):
    from torchvision import transforms as T

    ds = ImageFolderDataset(folder, "train")
    cache = ImageCache(ds, 28, root=tmp_path / "c")
    assert cache.array.shape == (len(ds), 32, 32, 3) and cache.array.dtype == np.uint8
    pil = T.Compose([T.Resize(32), T.CenterCrop(32), T.PILToTensor()])(ds.load_image(1))
    assert torch.equal(cache.tensor(1), pil)

    calls = []
    monkeypatch.setattr(ImageFolderDataset, "load_image",
                        lambda self, i: calls.append(i) or None)
    again = ImageCache(ds, 28, root=tmp_path / "c")  # a hit: nothing decoded
    assert calls == [] and np.array_equal(again.array, cache.array)


def test_image_cache_key_follows_file_content(folder, tmp_path):
    ds = ImageFolderDataset(folder, "train")
    first = ImageCache(ds, 28, root=tmp_path / "c")
    write_image(folder / "class0" / "0.png", seed=99, size=40)  # same name, new pixels
    second = ImageCache(ImageFolderDataset(folder, "train"), 28, root=tmp_path / "c")
    assert first.path != second.path
    assert not np.array_equal(first.array[0], second.array[0])


def test_cached_images_give_the_stream_transforms_on_tensors(folder, tmp_path):
    train, test = (ImageFolderDataset(folder, s) for s in ("train", "test"))
    tr, te = cached_pair(train, test, 28, False, images=True, root=tmp_path / "c")
    assert isinstance(tr, CachedImages) and tr.targets == train.targets
    x, y = te[0]
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32 and y == test.targets[0]
    torch.manual_seed(0)
    a = tr[0][0]
    torch.manual_seed(0)
    assert torch.equal(a, tr[0][0])  # augmentation follows torch's seed


@pytest.mark.parametrize("train", [True, False])
def test_tensor_transform_matches_torchvision(train):
    """The hand-written tensor pipeline equals torchvision's functional ops (same draws)."""
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms.v2 import functional as TF

    from benchmarks.transforms import IMAGENET_MEAN, IMAGENET_STD

    g = torch.Generator().manual_seed(1)
    hwc = torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8, generator=g)
    img = hwc.permute(2, 0, 1)  # the cache's layout: an HWC array seen as CHW
    for seed in range(6):
        torch.manual_seed(seed)
        out = tensor_transforms(28, train)(img)
        torch.manual_seed(seed)
        ref = img.contiguous()
        if train:
            top, left, h, w = RandomResizedCrop.get_params(ref, (0.5, 1.0), (3 / 4, 4 / 3))
            ref = TF.resized_crop(ref, top, left, h, w, [28, 28], antialias=True)
            if torch.rand(()) < 0.5:
                ref = ref.flip(-1)
        else:
            ref = TF.center_crop(ref, [28, 28])
        ref = TF.normalize(ref.float() / 255, IMAGENET_MEAN, IMAGENET_STD)
        assert out.shape == (3, 28, 28)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def synth_pair():
    kw = {"num_classes": 4, "train_per_class": 3, "test_per_class": 2}
    return SynthFG(None, "train", **kw), SynthFG(None, "test", **kw)


def test_feature_cache_gives_the_same_embeddings_as_images(tmp_path):
    torch.manual_seed(0)
    model = EmbeddingNet("small_cnn", dim=16, frozen_stages=2).eval()
    train, _ = synth_pair()
    images = ImageCache(train, 32, generated=True, root=tmp_path)
    feats = stem_feature_cache(images, model, views=2, root=tmp_path)
    assert feats.shape == (len(train), 2, 32, 8, 8)
    views = torch.cat([view_tensors(images, i, 2) for i in range(3)])
    cached = torch.from_numpy(np.array(feats[:3])).flatten(0, 1)
    with torch.no_grad():
        assert torch.equal(model(views), model(cached))
    assert torch.equal(views[1], views[0].flip(-1))  # view 1 mirrors view 0
    again = stem_feature_cache(images, model, views=2, root=tmp_path)
    assert np.array_equal(again, feats)


def test_feature_cache_views_and_stem_keys(tmp_path):
    torch.manual_seed(0)
    a = EmbeddingNet("small_cnn", dim=16, frozen_stages=1)
    torch.manual_seed(1)
    b = EmbeddingNet("small_cnn", dim=16, frozen_stages=1)
    train, test = synth_pair()
    tr_a, te_a = cached_pair(train, test, 32, True, model=a, views=3, root=tmp_path)
    tr_b, _ = cached_pair(train, test, 32, True, model=b, views=3, root=tmp_path)
    assert isinstance(tr_a, CachedFeatures) and tr_a.features.shape[1] == 3
    assert te_a.features.shape[1] == 1  # test: the centre view only
    assert not np.array_equal(tr_a.features, tr_b.features)  # other stem, other entry
    torch.manual_seed(5)
    first = [tr_a[0][0] for _ in range(6)]
    torch.manual_seed(5)
    assert all(torch.equal(x, y) for x, y in zip(first, [tr_a[0][0] for _ in range(6)],
                                                   strict=True))


def test_frozen_stem_never_trains():
    model = EmbeddingNet("small_cnn", dim=16, frozen_stages=3)
    assert all(not p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in model.trunk.parameters())
    model.train()
    assert not model.stem.training and model.trunk.training
    before = {k: v.clone() for k, v in model.stem.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.stem.state_dict().items())
    with pytest.raises(ValueError, match="frozen_stages must be in 0..3"):
        EmbeddingNet("small_cnn", frozen_stages=4)


def test_frozen_stem_follows_a_loaded_state():
    torch.manual_seed(0)
    a = EmbeddingNet("small_cnn", dim=16, frozen_stages=2).eval()
    b = EmbeddingNet("small_cnn", dim=16, frozen_stages=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        b(x)  # builds b's folded stem
        b.load_state_dict(a.state_dict())
        assert torch.allclose(a(x), b(x), atol=1e-6)


@pytest.mark.parametrize("trunk, stages, shape", [("small_cnn", 2, (3, 32, 32)),
                                                  ("mobilenet_v2", 18, (320, 7, 7))])
def test_teacher_fast_forward_matches_the_model(trunk, stages, shape):
    from strategies.teacher import fast_forward

    torch.manual_seed(0)
    model = EmbeddingNet(trunk, dim=16, frozen_stages=stages)
    model.train()
    model(torch.randn(8, *shape))  # BatchNorm running statistics away from their init
    model.eval()
    x = torch.randn(5, *shape)
    with torch.no_grad():
        assert torch.allclose(fast_forward(model)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("trunk, stages, shape", [("timm:resnet18", 5, (64, 8, 8)),
                                                  ("timm:vit_tiny_patch16_224", 2, (5, 192))])
def test_feature_cache_with_a_timm_trunk(tmp_path, trunk, stages, shape):
    """A timm trunk's frozen stem fills the feature cache like any other (a ViT's cached
    stem output is its tokens); training from the cache sees the same embeddings, and the
    teacher's fast forward takes the cached features too."""
    pytest.importorskip("timm")
    from strategies.teacher import fast_forward

    torch.manual_seed(0)
    model = EmbeddingNet(trunk, dim=16, frozen_stages=stages).eval()
    train, test = synth_pair()
    images = ImageCache(train, 32, generated=True, root=tmp_path)
    feats = stem_feature_cache(images, model, views=2, root=tmp_path)
    assert feats.shape == (len(train), 2, *shape)
    views = torch.cat([view_tensors(images, i, 2) for i in range(3)])
    cached = torch.from_numpy(np.array(feats[:3])).flatten(0, 1)
    with torch.no_grad():
        assert torch.equal(model(views), model(cached))
        assert torch.allclose(fast_forward(model)(cached), model(cached), atol=1e-5)
    tr, te = cached_pair(train, test, 32, True, model=model, views=2, root=tmp_path)
    assert isinstance(tr, CachedFeatures) and te.features.shape[1:] == (1, *shape)
