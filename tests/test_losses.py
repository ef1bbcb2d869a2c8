"""Metric losses: hand-checkable values and gradient directions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from strategies.losses import METRIC_LOSSES, hard_mining_loss, make_metric_loss

# four unit vectors, two classes: s01 = 0.8, s02 = 0, s03 = 0.6, s12 = 0.6, s13 = 0.96, s23 = 0.8
F4 = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]]
Y4 = [0, 0, 1, 1]


def test_hard_mining_hand_value_margin_01():
    # anchors 0 and 2 keep nothing (their negatives are easy); anchors 1 and 3 keep their
    # positive (s = 0.8) and the hard negative (s = 0.96): l = (1 - 0.8) + 0.96 = 1.16
    loss = hard_mining_loss(torch.tensor(F4), torch.tensor(Y4), margin=0.1)
    assert loss.item() == pytest.approx((0 + 1.16 + 0 + 1.16) / 4)


def test_hard_mining_hand_value_margin_05():
    # margin 0.5: l0 = 0.2 + 0.6, l1 = 0.2 + mean(0.6, 0.96), l2 = 0.2 + 0.6, l3 = l1
    loss = hard_mining_loss(torch.tensor(F4), torch.tensor(Y4), margin=0.5)
    assert loss.item() == pytest.approx((0.8 + 0.98 + 0.8 + 0.98) / 4)


def test_hard_mining_without_positives_or_negatives_is_zero():
    f = torch.tensor(F4)
    assert hard_mining_loss(f, torch.tensor([0, 1, 2, 3])).item() == 0.0
    assert hard_mining_loss(f, torch.tensor([0, 0, 0, 0])).item() == 0.0


def test_hard_mining_gradient_pulls_positives_and_pushes_hard_negatives():
    f = torch.tensor(F4, requires_grad=True)
    hard_mining_loss(f, torch.tensor(Y4)).backward()
    g = f.grad
    assert g is not None and torch.isfinite(g).all()
    stepped = F.normalize(f.detach() - 0.05 * g, dim=1)
    s = stepped @ stepped.T
    assert s[1, 3] < 0.96 and s[1, 0] > 0.8  # hard negative pushed, positive pulled
    assert hard_mining_loss(stepped, torch.tensor(Y4)) < hard_mining_loss(f.detach(),
                                                                         torch.tensor(Y4))


@pytest.mark.parametrize("name", METRIC_LOSSES)
def test_every_metric_loss_runs_and_descends(name):
    torch.manual_seed(0)
    f = torch.randn(12, 8, requires_grad=True)
    y = torch.arange(12) // 3
    loss_fn = make_metric_loss(name, embedding_size=8, num_classes=4)
    loss = loss_fn(F.normalize(f, dim=1), y)
    assert torch.isfinite(loss)
    loss.backward()
    with torch.no_grad():
        after = loss_fn(F.normalize(f - 0.1 * f.grad, dim=1), y)
    assert after <= loss + 1e-6


def test_unknown_metric_loss():
    with pytest.raises(ValueError, match="unknown metric loss"):
        make_metric_loss("arcface")
