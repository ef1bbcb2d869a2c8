"""The real-data matrix files run what the tuning chose: every strategy of the CUB and
lifelong test matrices, and the base of every ablation variant, has exactly the values of
the committed tuning output (docs/results/tuning/tuned.yaml), so a test run can never drift
from its validation table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.config import expand_cells, load_config, resolved_hparams

REPO = Path(__file__).resolve().parents[1]
TUNED = REPO / "docs" / "results" / "tuning" / "tuned.yaml"


def _chosen() -> dict[str, dict]:
    """strategy -> its resolved hyperparameters as the tuning chose them."""
    data = yaml.safe_load(TUNED.read_text())
    return {name: resolved_hparams(name, dict(params or {}))
            for name, params in data["strategies"].items()}


def _cells(name: str) -> dict[str, dict]:
    """label -> (strategy, resolved hyperparameters) of a matrix file's cells."""
    cells = expand_cells(load_config(REPO / "configs" / name))
    return {c.strategy: (c.plugin_name, dict(c.hparams)) for c in cells}


@pytest.mark.parametrize("matrix", ["thesis-cub-subset.yaml", "thesis-lifelong.yaml"])
def test_test_matrices_use_the_tuned_values(matrix):
    chosen = _chosen()
    cells = _cells(matrix)
    assert set(cells) == set(chosen)  # every tuned strategy runs, nothing else
    for label, (strategy, hparams) in cells.items():
        assert strategy == label
        assert hparams == chosen[strategy], label


def test_ablations_change_one_setting_of_the_tuned_method():
    chosen = _chosen()
    for label, (strategy, hparams) in _cells("thesis-cub-subset-ablations.yaml").items():
        differs = {k for k in hparams if hparams[k] != chosen[strategy].get(k)}
        if label == strategy:
            assert not differs, label  # the tuned method itself
        else:
            assert len(differs) == 1, (label, differs)  # the one ablated setting
