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
