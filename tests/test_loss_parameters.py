"""A metric loss's own parameters (proxies) are optimised, in training and in ``run_cell``,
and travel with checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import strategies.losses
from benchmarks.config import expand_cells, load_config
from benchmarks.contract import tiny_stream
from benchmarks.run.cell import run_cell
from metrics.plugins import RetrievalMetrics
from strategies import make_plugin
from strategies.losses import METRIC_LOSSES, make_metric_loss, trainable_parameters
from strategies.model import EmbeddingNet
from strategies.template import RetrievalTemplate, seed_everything

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
#: the metric losses that own parameters; every other one must own none
WITH_PARAMETERS = {"normalized_softmax"}


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def all_changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    after = list(module.parameters())
    return len(before) == len(after) and all(not torch.equal(b, a)
                                             for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize("name", METRIC_LOSSES)
def test_a_few_steps_change_every_parameter_the_loss_owns(name):
    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    criterion = make_metric_loss(name, embedding_size=8, num_classes=4)
    owned = list(criterion.parameters())
    assert bool(owned) == (name in WITH_PARAMETERS), f"{name} owns {len(owned)} parameters"
    params = trainable_parameters(model, criterion)
    assert [id(p) for p in params] == [id(p) for p in [*model.parameters(), *owned]]
    before_loss, before_model = snapshot(criterion), snapshot(model)
    opt = torch.optim.Adam(params, lr=0.01)
    x, y = torch.randn(12, 8), torch.arange(12) // 3
    for _ in range(3):
        opt.zero_grad()
        criterion(F.normalize(model(x), dim=1), y).backward()
        opt.step()
    assert all_changed(before_model, model)
    assert all_changed(before_loss, criterion)  # vacuous only where it owns none (checked)


def test_trainable_parameters_skip_frozen_and_shared_ones():
    model = nn.Linear(4, 4)
    model.bias.requires_grad_(False)
    criterion = nn.Module()
    criterion.w = model.weight  # shared: listed once
    criterion.t = nn.Parameter(torch.ones(()))
    assert trainable_parameters(model, criterion) == [model.weight, criterion.t]
    assert trainable_parameters(model, lambda f, y: f.sum()) == [model.weight]


def proxy_template(seed: int = 0, model_only: bool = False) -> RetrievalTemplate:
    seed_everything(seed)
    model = EmbeddingNet("small_cnn", dim=32, pool="avg")
    criterion = make_metric_loss("normalized_softmax", embedding_size=32, num_classes=12)
    params = list(model.parameters()) if model_only else trainable_parameters(model, criterion)
    return RetrievalTemplate(model=model, optimizer=torch.optim.Adam(params, lr=0.01),
                             criterion=criterion, p=4, k=3, iterations=4,
                             plugins=[make_plugin("finetune")],
                             metrics=RetrievalMetrics(ks=(1,)), eval_mb_size=64, seed=seed)


def test_template_trains_the_proxies_in_every_experience_and_checkpoints_them(tmp_path):
    bench = tiny_stream()
    tpl = proxy_template()
    states = [snapshot(tpl._criterion)]
    for exp in bench.train_stream[:2]:  # the second: after Avalanche re-adapts the optimizer
        tpl.train(exp)
        states.append(snapshot(tpl._criterion))
    for a, b in zip(states, states[1:], strict=False):
        assert not torch.equal(a[0], b[0])

    whole = proxy_template()
    whole.run(bench)
    part = proxy_template()
    part.run(bench, checkpoint=tmp_path / "ckpt.pt", stop_after=1)
    resumed = proxy_template(seed=1)  # other initial proxies: the checkpoint must set them
    resumed.seed = 0
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    assert torch.equal(next(resumed._criterion.parameters()),
                       next(part._criterion.parameters()))
    resumed.run(bench)
    assert resumed.loss_history == whole.loss_history
    assert np.array_equal(resumed.metrics.r_matrix(1), whole.metrics.r_matrix(1))


def test_template_refuses_an_optimizer_without_the_loss_parameters():
    with pytest.raises(ValueError, match=r"loss\.W .*trainable_parameters"):
        proxy_template(model_only=True)


def test_run_cell_optimises_the_loss_parameters(monkeypatch):
    made: list[nn.Module] = []

    def spy(*args, **kwargs):
        made.append(make_metric_loss(*args, **kwargs))
        made.append(snapshot(made[-1]))
        return made[0]

    monkeypatch.setattr(strategies.losses, "make_metric_loss", spy)
    config = load_config(SMOKE, ["training.iterations=3", "seeds=[0]",
                                 "training.loss=normalized_softmax",
                                 "strategies={finetune: {}}"])
    run_cell(expand_cells(config)[0], log=lambda _: None)
    criterion, before = made
    assert list(criterion.parameters()) and all_changed(before, criterion)
