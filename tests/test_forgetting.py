"""forgetting() on hand-computed matrices."""

from __future__ import annotations

import numpy as np
import pytest

from metrics import forgetting


def test_hand_computed_3x3():
    r = [[0.8, 0.1, 0.0],
         [0.6, 0.7, 0.2],
         [0.5, 0.4, 0.9]]
    out = forgetting(r)
    assert out["forgetting_per_task"] == pytest.approx([0.3, 0.3])
    assert out["forgetting"] == pytest.approx(0.3)
    assert out["forgetting_ratio_per_task"] == pytest.approx([0.3 / 0.8, 0.3 / 0.7])
    assert out["forgetting_ratio"] == pytest.approx((0.375 + 3 / 7) / 2)
    assert out["bwt"] == pytest.approx(-0.3)
    assert out["avg_incremental"] == pytest.approx((0.8 + 0.65 + 0.6) / 3)
    assert out["final"] == pytest.approx([0.5, 0.4, 0.9])
    assert out["final_mean"] == pytest.approx(0.6)


def test_hand_computed_4x4_max_is_not_the_diagonal():
    # task 0 improves after task 1 (0.5 -> 0.7), so its forgetting counts from 0.7
    r = [[0.5, 0.0, 0.0, 0.0],
         [0.7, 0.6, 0.0, 0.0],
         [0.4, 0.65, 0.8, 0.0],
         [0.3, 0.5, 0.6, 0.9]]
    out = forgetting(r)
    assert out["forgetting_per_task"] == pytest.approx([0.4, 0.15, 0.2])
    assert out["forgetting"] == pytest.approx(0.25)
    assert out["forgetting_ratio"] == pytest.approx((0.4 + 0.1 / 0.6 + 0.25) / 3)
    assert out["bwt"] == pytest.approx(-0.5 / 3)
    assert out["bwt_per_task"] == pytest.approx([-0.2, -0.1, -0.2])
    assert out["avg_incremental"] == pytest.approx((0.5 + 0.65 + 1.85 / 3 + 0.575) / 4)


def test_no_drop_means_zero_forgetting_and_upper_triangle_ignored():
    r = np.full((4, 4), 0.7)
    r[np.triu_indices(4, 1)] = np.nan  # not measured: allowed above the diagonal
    out = forgetting(r)
    assert out["forgetting"] == 0.0 and out["bwt"] == 0.0 and out["forgetting_ratio"] == 0.0


def test_single_experience_is_undefined_not_zero():
    out = forgetting([[0.9]])
    assert np.isnan(out["forgetting"]) and np.isnan(out["bwt"])
    assert out["avg_incremental"] == pytest.approx(0.9)


def test_zero_diagonal_ratio_is_nan_not_inf():
    out = forgetting([[0.0, 0.0], [0.0, 0.5]])
    assert np.isnan(out["forgetting_ratio"]) and out["forgetting"] == 0.0


def test_bad_shapes():
    with pytest.raises(ValueError, match="T x T"):
        forgetting([[0.1, 0.2]])
    with pytest.raises(ValueError, match="missing"):
        forgetting([[0.1, 0.0], [np.nan, 0.2]])
