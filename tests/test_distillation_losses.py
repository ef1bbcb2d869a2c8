"""Distillation losses of the thesis methods: hand-checkable values, gradient directions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from strategies.losses import (
    bn_statistics_loss,
    correlation_distillation,
    mmd,
    total_variation,
)


def test_correlation_distillation_hand_value():
    # teacher: orthogonal pair, S_t = I; student: identical pair, S_s = all ones. T = 1:
    # row i: p_t = (e, 1)/(e + 1), p_s = (1/2, 1/2); KL = p ln(2p) + (1-p) ln(2(1-p))
    f_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f_s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = math.e / (math.e + 1)
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    assert correlation_distillation(f_s, f_t, temperature=1.0).item() == pytest.approx(kl)
    # T = 2 scales the logits by 1/2 and the loss by T^2 = 4
    p2 = math.exp(0.5) / (math.exp(0.5) + 1)
    kl2 = p2 * math.log(2 * p2) + (1 - p2) * math.log(2 * (1 - p2))
    assert correlation_distillation(f_s, f_t, 2.0).item() == pytest.approx(4 * kl2)
    # reversed direction: KL(p_s || p_t) = sum 1/2 ln((1/2)/p)
    rev = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))
    assert correlation_distillation(f_s, f_t, 1.0, "student_to_teacher").item() == \
        pytest.approx(rev)
    assert correlation_distillation(f_t, f_t).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        correlation_distillation(f_s, f_t, direction="both")


@pytest.mark.parametrize("direction", ["teacher_to_student", "student_to_teacher"])
def test_correlation_distillation_pulls_student_towards_teacher(direction):
    torch.manual_seed(0)
    f_t = F.normalize(torch.randn(4, 3), dim=1)
    f_s = F.normalize(torch.randn(4, 3), dim=1).requires_grad_(True)
    loss = correlation_distillation(f_s, f_t, 1.0, direction)
    loss.backward()
    stepped = F.normalize(f_s.detach() - 0.1 * f_s.grad, dim=1)
    gap = lambda f: (f @ f.T - f_t @ f_t.T).abs().sum()  # noqa: E731
    assert gap(stepped) < gap(f_s.detach())
    assert correlation_distillation(stepped, f_t, 1.0, direction) < loss
    f_t_grad = f_t.clone().requires_grad_(True)
    assert not correlation_distillation(f_s.detach(), f_t_grad).requires_grad  # teacher: constant


def test_mmd_hand_value_and_gradient():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    # 1 + 1 - 2 exp(-||s - t||^2 / 2) with ||s - t||^2 = 2
    assert mmd(s, t).item() == pytest.approx(2 - 2 * math.exp(-1))
    # two bandwidths add their kernels
    assert mmd(s, t, (1.0, 2.0)).item() == pytest.approx(
        2 - 2 * math.exp(-1) + 2 - 2 * math.exp(-0.25))
    # three vs three: identical samples give 0
    x = torch.randn(3, 4)
    assert mmd(x, x).item() == pytest.approx(0.0, abs=1e-6)
    fs = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    ft = torch.tensor([[0.0, 0.5], [0.5, 0.0], [0.2, 0.2]])
    loss = mmd(fs, ft)
    loss.backward()
    assert mmd(fs.detach() - 0.5 * fs.grad, ft) < loss


class OneBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2)
        self.bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
        self.bn.running_var.copy_(torch.tensor([4.0, 0.25]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def test_bn_statistics_loss_hand_value():
    model = OneBN().eval()
    # channel 0 holds 0 and 2 (mean 1, var 1), channel 1 holds -1 everywhere (mean -1, var 0)
    x = torch.zeros(2, 2, 1, 1)
    x[0, 0], x[1, 0] = 0.0, 2.0
    x[:, 1] = -1.0
    # ||mu - mu_run|| = ||(0, 0)|| = 0; ||var - var_run|| = ||(1 - 4, 0 - 0.25)||
    expected = math.sqrt(9 + 0.0625)
    assert bn_statistics_loss(model, x).item() == pytest.approx(expected)
    assert torch.equal(model.bn.running_mean, torch.tensor([1.0, -1.0]))  # untouched
    with pytest.raises(ValueError, match="no BatchNorm"):
        bn_statistics_loss(nn.Linear(2, 2), torch.zeros(1, 2))


def test_total_variation_hand_value():
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # vertical diffs 0, horizontal 1
    assert total_variation(x).item() == pytest.approx(1.0)


def test_bn_synthesis_decreases_and_beats_noise():
    """DKD's synthesis: the BN term falls, and ends nearer the running stats than noise."""
    from strategies.dkd import DKD
    from strategies.model import EmbeddingNet

    torch.manual_seed(0)
    teacher = EmbeddingNet("small_cnn", dim=8).train()
    with torch.no_grad():  # give the BN layers running statistics of "old data"
        for _ in range(20):
            teacher(torch.rand(16, 3, 32, 32) * 0.5 + 0.3)
    teacher.eval()
    plugin = DKD(DKD.Config(n_synth=16, synth_steps=40))
    plugin.teacher = teacher
    x = plugin.synthesize((3, 32, 32), torch.device("cpu"))
    history = plugin.synthesis_history
    assert len(history) == 40 and history[-1] < 0.5 * history[0]
    first, middle, last = (sum(history[i:i + 10]) for i in (0, 15, 30))
    assert last < middle < first
    noise = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert bn_statistics_loss(teacher, x) < bn_statistics_loss(teacher, noise)
