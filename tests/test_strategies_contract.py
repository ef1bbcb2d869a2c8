"""Every registered strategy passes the contract kit (`pytest -k contract`)."""

from __future__ import annotations

import pytest

from benchmarks.contract import check_strategy
from strategies import available_strategies

#: smaller budgets where a default is sized for real runs (the kit must take seconds)
KIT_HPARAMS = {"dkd": {"n_synth": 16, "synth_steps": 5}}


@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_contract(name, tmp_path):
    report = check_strategy(name, KIT_HPARAMS.get(name), tmp_path=tmp_path)
    assert "checkpoint + resume identical" in report.checks


def test_contract_with_a_timm_trunk(tmp_path):
    """``model.trunk: timm:resnet18`` (randomly initialised, 32 px images) passes the kit."""
    pytest.importorskip("timm")
    report = check_strategy("l2_kd", trunk="timm:resnet18", tmp_path=tmp_path)
    assert "checkpoint + resume identical" in report.checks
    assert any(c.startswith("regulariser active") for c in report.checks)
