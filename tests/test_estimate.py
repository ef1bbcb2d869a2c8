"""The dry run's expected wall time (benchmarks/run/estimate.py): its arithmetic on given
rates, and the measured rates themselves on a small model."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.config import expand_cells, load_config
from benchmarks.run import estimate as est

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_wall_time_is_the_work_at_the_measured_rates(monkeypatch):
    """Given rates, the lines are steps x P x K / training rate + images embedded /
    inference rate summed over the cells (here by hand from the stream's counts), and the
    GPU's the FLOP counts over the assumed rate, capped by the loading rate."""
    cells = expand_cells(load_config(SMOKE, ["training.iterations=7"]))
    infos, notes = est.stream_infos(cells)
    assert not notes  # synth-fg is embedded: every scenario's counts are known
    monkeypatch.setattr(est, "step_rate", lambda m, x, train=True, *a, **k: 5.0 if train else 80.0)
    monkeypatch.setattr(est, "flops_per_image", lambda m, size, train=True: 3e10 if train else 1e10)
    cpu = gpu = 0.0
    steps_all = evals_all = 0
    for cell in cells:
        exps = infos[cell.scenario.name].experiences
        steps = 7 * len(exps)
        evals = len(exps) * sum(e.test_images for e in exps)
        batch = cell.training.p * cell.training.k
        cpu += steps * batch / 5.0 + evals / 80.0
        tflops = est.GPU_TFLOPS["bf16" if cell.training.amp else "fp32"] * 1e12
        gpu += steps * batch / min(tflops / 3e10, est.GPU_LOAD_RATE) \
            + evals / min(tflops / 1e10, est.GPU_LOAD_RATE)
        steps_all, evals_all = steps_all + steps, evals_all + evals
    assert steps_all == 7 * sum(len(infos[c.scenario.name].experiences) for c in cells) > 0
    lines = est.estimate(cells, infos)
    assert lines[0] == (f"expected wall time, cells one after another: {est._hours(cpu)} on "
                        f"this machine, {est._hours(gpu)} on a GPU ({steps_all:,} steps, "
                        f"{evals_all:,} images embedded in evaluations)")
    assert "5.0 training and 80.0 inference images/s" in lines[1]
    assert "30.00 GFLOP per training image" in lines[1]


def test_hours_switches_unit_where_it_reads_best():
    assert [est._hours(s) for s in (42, 59.4, 60, 3599, 3600, 5400, 48 * 3600)] == [
        "42 s", "59 s", "1 min", "60 min", "1.0 h", "1.5 h", "2 days"]


def test_measured_rates_are_the_images_over_the_median_step(monkeypatch):
    """The rate is the batch over the median of the timed repeats, the warm-up not
    counted (a training step here); the FLOP count of a linear layer is exact."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    ticks = iter([0.0, 9.0,   # warm-up: 9 s, not counted
                  10.0, 10.5, 20.0, 20.25])  # repeats: 0.5 s and 0.25 s -> median 0.375
    monkeypatch.setattr(est, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    rate = est.step_rate(model, torch.randn(6, 3, 4, 4), train=True, repeats=2)
    assert math.isclose(rate, 6 / 0.375)
    # forward: 2 x 48 x 5 per image; backward: the weight's gradient only (the input
    # needs none), as many again
    forward = 2 * 48 * 5
    assert est.flops_per_image(model, 4, train=False) == forward
    assert est.flops_per_image(model, 4, train=True) == 2 * forward
