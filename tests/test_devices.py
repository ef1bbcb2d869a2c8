"""The CUDA path, tested without a GPU: CUDA generator states in checkpoints (mocked CUDA,
stored as uint8 tensors that ``torch.load(weights_only=True)`` reads) and device placement
(every trunk, loss and distillation term computed on ``meta`` tensors, so a tensor made on
the CPU inside a forward pass would fail here as it would on a GPU)."""

from __future__ import annotations

import pytest
import torch

from strategies import devices


class FakeCuda:
    """Two CUDA devices whose generator states are byte tensors (what torch.cuda keeps)."""

    def __init__(self, monkeypatch, count: int = 2) -> None:
        self.states = [torch.arange(16, dtype=torch.uint8) + 10 * i for i in range(count)]
        self.set: dict[int, torch.Tensor] = {}
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: count)
        monkeypatch.setattr(cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(cuda, "set_rng_state",
                            lambda state, device=0: self.set.__setitem__(device, state.clone()))


def test_cuda_rng_state_round_trip_through_a_weights_only_load(monkeypatch, tmp_path):
    fake = FakeCuda(monkeypatch)
    states = devices.cuda_rng_state()
    assert all(s.dtype == torch.uint8 and s.device.type == "cpu" for s in states)
    torch.save({"rng": {"cuda": states}}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["rng"]["cuda"]
    assert devices.set_cuda_rng_state(loaded) == 2
    assert all(torch.equal(fake.set[i], fake.states[i]) for i in range(2))


def test_no_cuda_state_without_cuda_and_none_restored(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.cuda_rng_state() == []
    assert devices.set_cuda_rng_state([torch.zeros(16, dtype=torch.uint8)]) == 0
    assert devices.set_cuda_rng_state(None) == 0


def test_fewer_devices_on_resume_restore_the_first(monkeypatch):
    fake = FakeCuda(monkeypatch, count=1)
    two = [torch.full((16,), 3, dtype=torch.uint8), torch.full((16,), 4, dtype=torch.uint8)]
    assert devices.set_cuda_rng_state(two) == 1 and torch.equal(fake.set[0], two[0])


def test_template_checkpoint_saves_and_restores_cuda_generators(monkeypatch, tmp_path):
    """A checkpoint written after an experience holds each device's generator state (what
    :func:`strategies.devices.cuda_rng_state` gives; CUDA itself mocked there, the run is
    on CPU); a fresh template loading it hands them back to ``set_cuda_rng_state``."""
    import strategies.checkpoints as checkpoints
    from benchmarks.contract import build_template, tiny_stream

    saved = [torch.arange(16, dtype=torch.uint8), torch.arange(16, dtype=torch.uint8) + 10]
    monkeypatch.setattr(checkpoints, "cuda_rng_state", lambda: [s.clone() for s in saved])
    restored: list = []
    monkeypatch.setattr(checkpoints, "set_cuda_rng_state", restored.append)
    tpl = build_template("finetune", iterations=2)
    tpl.run(tiny_stream(), checkpoint=tmp_path / "c.pt", stop_after=1)
    rng = torch.load(tmp_path / "c.pt", weights_only=False)["rng"]
    assert all(torch.equal(a, b) for a, b in zip(rng["cuda"], saved, strict=True))
    fresh = build_template("finetune", iterations=2)
    fresh.load_checkpoint(tmp_path / "c.pt")
    assert len(restored) == 1
    assert all(torch.equal(a, b) for a, b in zip(restored[0], saved, strict=True))


@pytest.mark.parametrize(("trunk", "size", "frozen"), [
    ("small_cnn", 32, 0), ("small_cnn", 32, 2), ("mobilenet_v2", 64, 14),
    ("resnet18", 64, 5), ("bninception", 96, 0), ("bninception", 96, 3)])
def test_model_runs_wholly_on_the_device_of_its_input(trunk, size, frozen):
    """The model moved to ``meta`` embeds ``meta`` images (and a frozen stem's output):
    no tensor of a forward pass is made on another device."""
    from strategies.model import EmbeddingNet

    model = EmbeddingNet(trunk, dim=16, frozen_stages=frozen, classifier=True).to("meta")
    model.grow(5)
    model = model.to("meta")
    x = torch.empty(4, 3, size, size, device="meta")
    f = model(x)
    assert f.device.type == "meta" and f.shape == (4, 16)
    assert model.logits(f).shape == (4, 5) and model.logits(f).device.type == "meta"


@pytest.mark.parametrize("name", ["hard_mining"])  # pml losses index data-dependently
def test_metric_losses_compute_on_the_device_of_the_embeddings(name):
    from strategies.losses import make_metric_loss

    loss = make_metric_loss(name, 0.1, 8, 4).to("meta")
    f = torch.nn.functional.normalize(torch.empty(8, 8, device="meta"), dim=1)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3], device="meta")
    out = loss(f, y)
    assert out.device.type == "meta"
