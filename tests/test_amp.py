"""training.amp (CUDA only) and training.channels_last (any device): options that leave the
hashes of existing cells untouched; amp leaves CPU runs untouched, channels-last computes
them in NHWC, equal up to rounding and as deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks.config import expand_cells, load_config, parse_config
from benchmarks.contract import tiny_stream
from metrics.plugins import RetrievalMetrics
from strategies import template as template_module
from strategies.model import EmbeddingNet
from strategies.registry import make_plugin
from strategies.template import RetrievalTemplate, seed_everything

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def _run(device: str, **options) -> RetrievalTemplate:
    seed_everything(0)
    model = EmbeddingNet("small_cnn", dim=16, pool="avg")
    tpl = RetrievalTemplate(model=model, optimizer=torch.optim.Adam(model.parameters(), 0.01),
                            p=4, k=3, iterations=3, plugins=[make_plugin("finetune")],
                            metrics=RetrievalMetrics(ks=(1,)), eval_mb_size=64, device=device,
                            **options)
    tpl.run(tiny_stream(), stop_after=2)
    return tpl


def test_amp_is_inactive_on_cpu_with_one_note(monkeypatch, capsys):
    monkeypatch.setattr(template_module, "_NOTED", set())
    plain = _run("cpu")
    assert "note" not in capsys.readouterr().err
    asked = _run("cpu", amp=True)
    again = _run("cpu", amp=True)
    notes = [line for line in capsys.readouterr().err.splitlines() if "inactive" in line]
    assert notes == ["lrbench: note: training.amp: inactive on cpu (CUDA only); this run "
                     "computes in float32"]  # once, one line
    assert not asked.amp
    assert asked.loss_history == plain.loss_history == again.loss_history
    assert np.array_equal(asked.metrics.r_matrix(1), plain.metrics.r_matrix(1), equal_nan=True)


def test_channels_last_acts_on_cpu_deterministically_and_close_to_the_default(capsys):
    plain = _run("cpu")
    nhwc = _run("cpu", channels_last=True)
    again = _run("cpu", channels_last=True)
    assert "inactive" not in capsys.readouterr().err
    assert nhwc.channels_last
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.loss_history == again.loss_history  # deterministic
    assert np.array_equal(nhwc.metrics.r_matrix(1), again.metrics.r_matrix(1), equal_nan=True)
    for a, b in zip(nhwc.loss_history, plain.loss_history, strict=True):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) <= 1e-3 * max(1.0, abs(b[k])) for k in a)


def test_the_options_keep_existing_cells_hashes(tmp_path):
    """Stores written before the options existed still resume: at their default the options
    are left out of a cell's hash (and of result.json's config); set, they make other cells."""
    base = {c.id: c.hash for c in expand_cells(load_config(SMOKE))}
    data = yaml.safe_load(Path(SMOKE).read_text())
    data["training"] = {**data.get("training", {}), "amp": False, "channels_last": False}
    explicit = expand_cells(parse_config(data))
    assert {c.id: c.hash for c in explicit} == base
    assert "amp" not in explicit[0].as_dict()["training"]
    for key in ("amp", "channels_last"):
        data["training"] = {**data["training"], "amp": False, "channels_last": False, key: True}
        cells = expand_cells(parse_config(data))
        assert all(c.hash != base[c.id] for c in cells)
        stored = cells[0].as_dict()
        assert stored["training"][key] is True
        assert type(cells[0]).from_stored(stored).hash == cells[0].hash


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_and_channels_last_on_cuda():
    tpl = _run("cuda", amp=True, channels_last=True)
    assert tpl.amp == torch.cuda.is_bf16_supported() and tpl.channels_last
    assert all(np.isfinite(v) for row in tpl.loss_history for v in row.values())
    assert np.isfinite(tpl.metrics.r_matrix(1)[:2, :2]).all()
    conv = next(m for m in tpl.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
