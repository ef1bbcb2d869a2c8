"""The thesis backbone: BN-Inception as pretrainedmodels 0.7.4 defines it (keys, shapes and
the features it computes, recorded in tests/data/bninception_reference.json), its input
convention, its 512-d embedding at 224 px and its ImageNet file's loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).parent / "data" / "bninception_reference.json"


def reference_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Deterministic weights for every key (sorted order, one seed each): convolutions
    scaled by fan-in, BatchNorm near identity with positive variances."""
    out = {}
    for i, key in enumerate(sorted(shapes)):
        shape = shapes[key]
        g = torch.Generator().manual_seed(i)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            out[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif key.endswith("bn.weight"):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out


def reference_input() -> torch.Tensor:
    """Two 224 px images in pretrainedmodels' convention (BGR, 0-255, mean subtracted)."""
    return 50 * torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1234))


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def test_state_dict_keys_and_shapes_are_pretrainedmodels(reference):
    from strategies.bninception import bninception, flat_keys

    net = bninception()
    theirs = {k: v for k, v in reference["shapes"].items() if not k.startswith("last_linear")}
    ours = {k: list(net.state_dict()[v].shape) for k, v in flat_keys(net).items()}
    assert ours == theirs and len(ours) == 483
    assert reference["settings"]["input_space"] == "BGR"
    assert reference["settings"]["mean"] == [104, 117, 128]
    assert reference["settings"]["std"] == [1, 1, 1]
    assert reference["settings"]["url"].endswith("/bn_inception-52deb4733.pth")


def test_features_equal_pretrainedmodels_under_the_same_weights(reference):
    """Loaded with the same weights, fed the same image (lrbench's RGB normalised input,
    which the first stage converts), the network computes pretrainedmodels' features."""
    from strategies.bninception import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        bninception,
        load_bninception,
    )

    net = bninception().eval()
    load_bninception(net, reference_state(reference["shapes"]))
    raw = reference_input()  # BGR, 0-255, minus (104, 117, 128)
    rgb = raw.flip(1) + torch.tensor([128.0, 117.0, 104.0]).view(1, 3, 1, 1)
    x = (rgb / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        pooled = torch.amax(net(x), dim=(2, 3))
    want = torch.tensor(reference["max_pooled"])
    assert pooled.shape == want.shape == (2, 1024)
    assert torch.allclose(pooled, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_input_constants_are_lrbench_transforms():
    from benchmarks.transforms import IMAGENET_MEAN, IMAGENET_STD
    from strategies import bninception

    assert bninception.IMAGENET_MEAN == IMAGENET_MEAN
    assert bninception.IMAGENET_STD == IMAGENET_STD


def test_embedding_is_512_d_at_224_px_with_12_stages():
    from strategies.model import FROZEN_STAGES, EmbeddingNet, make_trunk

    torch.manual_seed(0)
    full, channels = make_trunk("bninception")
    assert len(full) == 12 and channels == 1024 and "bninception" in FROZEN_STAGES
    model = EmbeddingNet("bninception", dim=512, pool="max", frozen_stages=2).eval()
    with torch.no_grad():
        f = model(torch.randn(2, 3, 224, 224))
        assert model.trunk(model.stem_features(torch.randn(1, 3, 224, 224))).shape == (
            1, 1024, 7, 7)
    assert f.shape == (2, 512) and torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)


def test_weights_file_with_1xC_batchnorm_tensors_loads(tmp_path, reference):
    """The ported file's BatchNorm tensors may be 1 x C (legacy pickle format too): they
    are squeezed; a tensor of another shape, or a missing one, is refused in one line."""
    from strategies.bninception import bninception, flat_keys, load_bninception

    state = reference_state(reference["shapes"])
    odd = {k: v.unsqueeze(0) if k.endswith("_bn.weight") else v for k, v in state.items()}
    path = tmp_path / "bn_inception-52deb4733.pth"
    torch.save(odd, path, _use_new_zipfile_serialization=False)
    net = bninception()
    load_bninception(net, path)
    key = flat_keys(net)["inception_5b_3x3_bn.weight"]
    assert torch.equal(net.state_dict()[key], state["inception_5b_3x3_bn.weight"])
    del odd["conv1_7x7_s2.weight"]
    with pytest.raises(ValueError, match="1 missing"):
        load_bninception(bninception(), odd)
