"""Ablation switches of the thesis methods (issue #16): fecd's ``estimation``, dkd's
``synthetic`` and ``lambda_inv: 0``, and the student's BatchNorm frozen for fecd and dkd."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
import torch

from benchmarks.contract import build_template, tiny_stream
from strategies import make_plugin
from strategies.dkd import DKD, matched_noise

SMALL_DKD = {"n_synth": 8, "synth_steps": 2}


def terms(name: str, hparams: dict, experience: int) -> list[dict[str, float]]:
    """The logged loss terms of every training step of ``experience`` (tiny synth stream)."""
    template = build_template(name, hparams, seed=0, iterations=4)
    template.run(tiny_stream())
    return [row for row in template.loss_history if row["experience"] == experience]


def test_fecd_estimation_teacher_is_the_same_weight_on_the_teacher_term():
    """From the third experience, ``teacher`` adds lambda_est * L_corr(F_s, F_t): the
    logged term is the teacher term rescaled, lambda_est / lam times ``corr``."""
    hp = {"lam": 2.0, "lambda_est": 5.0, "estimation": "teacher"}
    assert all("estimation" not in row for row in terms("fecd", hp, 1))
    rows = terms("fecd", hp, 2)
    assert rows and all(row["corr"] > 0 for row in rows)
    for row in rows:
        assert row["estimation"] == pytest.approx(row["corr"] * 5.0 / 2.0, rel=1e-6)


def test_fecd_estimation_noise_differs_and_off_drops_the_term():
    noise = terms("fecd", {"lam": 2.0, "lambda_est": 5.0}, 2)
    assert any(row["estimation"] != pytest.approx(row["corr"] * 2.5, rel=1e-6)
               for row in noise)  # the estimated models are not the teacher
    for off in ({"estimation": "none"}, {"lambda_est": 0.0}):
        rows = terms("fecd", off, 2)
        assert rows and all("estimation" not in row and row["corr"] > 0 for row in rows)


def test_dkd_without_the_synthetic_term_skips_the_synthesis():
    with mock.patch.object(DKD, "synthesize", side_effect=AssertionError("synthesised")):
        rows = terms("dkd", {"lambda_inv": 0.0, **SMALL_DKD}, 1)
    assert rows and all(row["relation"] > 0 and "inversion" not in row for row in rows)


def test_matched_noise_keeps_per_channel_mean_and_variance():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) \
        + torch.tensor([0.0, 5.0, -2.0]).view(1, 3, 1, 1)
    x[:, 0, :4] += 4.0  # structure that noise does not keep
    n = matched_noise(x)
    dims = (0, 2, 3)
    assert torch.allclose(n.mean(dims), x.mean(dims), atol=0.15)
    assert torch.allclose(n.std(dims), x.std(dims), rtol=0.05)
    assert not torch.allclose(n, x, atol=1.0)


def test_dkd_synthetic_noise_replaces_the_synthesised_set():
    """``synthetic: noise``: the set the student distils on is noise with the synthesised
    set's per-channel statistics, not the synthesised images themselves."""
    made: list[torch.Tensor] = []

    def synthesize(self, shape, device):  # a stand-in synthesised set, with structure
        made.append(torch.randn(8, *shape) * 2 + 1)
        return made[-1]

    with mock.patch.object(DKD, "synthesize", synthesize):
        template = build_template("dkd", {"synthetic": "noise", **SMALL_DKD}, iterations=2)
        template.run(tiny_stream())
    plugin = next(p for p in template.plugins if isinstance(p, DKD))
    assert len(made) == 2  # experiences 2 and 3
    assert plugin.synthetic is not None and plugin.synthetic.shape == made[-1].shape
    assert not torch.equal(plugin.synthetic, made[-1])
    dims = (0, 2, 3)
    assert torch.allclose(plugin.synthetic.mean(dims), made[-1].mean(dims), atol=0.1)


@pytest.mark.parametrize("name,hparams", [("fecd", {}), ("dkd", {"lambda_inv": 0.0})])
def test_freeze_student_bn_is_shared_by_fecd_and_dkd(name, hparams):
    from strategies.model import EmbeddingNet

    for frozen in (False, True):
        plugin = make_plugin(name, {**hparams, "freeze_student_bn": frozen})
        model = EmbeddingNet("small_cnn", dim=8, pool="avg").train()
        plugin.teacher = None
        for exp in (0, 1):
            strategy = SimpleNamespace(model=model, experience=SimpleNamespace(
                current_experience=exp))
            plugin.before_training_exp(strategy)
            bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            assert bn and model.training
            # frozen from the second experience only, and only when asked
            assert all(not m.training for m in bn) == (frozen and exp == 1)


@pytest.mark.parametrize("name,hparams", [
    ("fecd", {"estimation": "teacher"}),
    ("fecd", {"estimation": "none", "freeze_student_bn": True}),
    ("dkd", {"lambda_inv": 0.0}),
    ("dkd", {"synthetic": "noise", "n_synth": 16, "synth_steps": 5}),
    ("dkd", {"freeze_student_bn": True, "n_synth": 16, "synth_steps": 5}),
])
def test_every_ablation_passes_the_contract_kit(name, hparams, tmp_path):
    """Trains, regularises, resumes from a checkpoint identically, deterministic."""
    from benchmarks.contract import check_strategy

    report = check_strategy(name, hparams, tmp_path=tmp_path)
    assert "checkpoint + resume identical" in report.checks
