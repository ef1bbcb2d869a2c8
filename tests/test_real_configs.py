"""The real-data matrix files run what the tuning chose, on what it was tuned on: the CUB
test matrix is the committed tuning output (docs/results/tuning/tuned.yaml, and
docs/results/tuning-more/tuned.yaml once the second tuning has run) on the test split
with 5 seeds; the lifelong matrix uses the same hyperparameters; every ablation is
the tuned method with one setting changed and shares the test matrix's cells of finetune,
fecd and dkd (same config hash, so they are computed once); the claims example names only
strategies and scenarios these matrices run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.config import Cell, expand_cells, load_config, resolved_hparams

REPO = Path(__file__).resolve().parents[1]
TUNED = REPO / "docs" / "results" / "tuning" / "tuned.yaml"
# the second tuning (configs/thesis-cub-subset-val-more.yaml), once it has run
TUNED_MORE = REPO / "docs" / "results" / "tuning-more" / "tuned.yaml"


def _tunings() -> list[Path]:
    return [TUNED] + ([TUNED_MORE] if TUNED_MORE.is_file() else [])


def _chosen() -> dict[str, tuple[str, dict]]:
    """label -> (registered strategy, its resolved hyperparameters) as the tunings chose
    them."""
    out = {}
    for path in _tunings():
        for label, params in yaml.safe_load(path.read_text())["strategies"].items():
            params = dict(params or {})
            strategy = params.pop("strategy", label)
            out[label] = (strategy, resolved_hparams(strategy, params))
    return out


def _expanded(name: str) -> list[Cell]:
    return expand_cells(load_config(REPO / "configs" / name))


def _cells(name: str) -> dict[str, tuple[str, dict]]:
    """label -> (registered strategy, resolved hyperparameters) of a matrix's cells."""
    return {c.strategy: (c.plugin_name, dict(c.hparams)) for c in _expanded(name)}


@pytest.mark.parametrize("matrix", ["thesis-cub-subset.yaml", "thesis-lifelong.yaml",
                                    "thesis-lifelong-orders.yaml"])
def test_test_matrices_use_the_tuned_values(matrix):
    chosen = _chosen()
    cells = _cells(matrix)
    assert set(cells) == set(chosen)  # every tuned strategy runs, nothing else
    for label, (strategy, hparams) in cells.items():
        assert (strategy, hparams) == chosen[label], label


def test_the_cub_test_matrix_is_the_tuned_matrix_on_the_test_split():
    """Everything but the seeds (5 instead of the 2 tuning seeds) and the name equals
    the tunings' tuned.yaml, whose scenario has no validation split left: the settings the
    values were chosen under are the settings they are tested under."""
    tuned = {c.id: c.hash for path in _tunings()
             for c in expand_cells(load_config(path, ["seeds=[0,1,2,3,4]"]))}
    test = load_config(REPO / "configs" / "thesis-cub-subset.yaml")
    assert test.seeds == [0, 1, 2, 3, 4]
    assert all(sc.validation is None for sc in test.scenarios)
    assert tuned == {c.id: c.hash for c in expand_cells(test)}


def test_ablations_change_one_setting_of_the_tuned_method_and_share_its_cells():
    chosen = {label: hparams for label, (_, hparams) in _chosen().items()}
    for label, (strategy, hparams) in _cells("thesis-cub-subset-ablations.yaml").items():
        differs = {k for k in hparams if hparams[k] != chosen[strategy].get(k)}
        if label == strategy:
            assert not differs, label  # the tuned method itself
        else:
            assert len(differs) == 1, (label, differs)  # the one ablated setting
    test = {c.id: c.hash for c in _expanded("thesis-cub-subset.yaml")}
    ablations = {c.id: c.hash for c in _expanded("thesis-cub-subset-ablations.yaml")}
    shared = set(test) & set(ablations)
    assert {i.split("__")[1] for i in shared} == {"finetune", "fecd", "dkd"}
    assert len(shared) == 15 and all(test[i] == ablations[i] for i in shared)


@pytest.mark.parametrize("claims_file, extra", [
    ("claims.yaml", ()),
    # declared before the test matrices hold the second tuning's strategies: its labels
    ("claims-second-tuning.yaml", ("thesis-cub-subset-val-more.yaml",)),
])
def test_the_claims_example_names_what_the_matrices_run(claims_file, extra):
    claims = yaml.safe_load((REPO / "docs" / "examples" / claims_file).read_text())
    cells = [c for name in ("thesis-cub-subset.yaml", "thesis-lifelong.yaml",
                            "thesis-cub-subset-ablations.yaml", *extra)
             for c in _expanded(name)]
    labels = {c.strategy for c in cells}
    scenarios = {c.scenario.name for c in cells}
    for claim in claims["claims"]:
        versus = claim["versus"] if isinstance(claim["versus"], list) else [claim["versus"]]
        strategies = [] if claim["strategies"] == "all" else claim["strategies"]
        named = set(strategies) | (set(versus) - {"others"})
        assert named <= labels, (claim["name"], named - labels)
        assert set(claim.get("scenarios") or []) <= scenarios, claim["name"]


def test_regenerate_joins_the_second_claims_exactly_when_the_matrices_run_them():
    """regenerate.sh joins docs/examples/claims-second-tuning.yaml when the CUB matrix's
    text has a line starting '  bct:' (its gate, a grep): that must hold exactly when the
    second tuning's choice is in the matrices."""
    import re

    gate = (REPO / "docs" / "results" / "regenerate.sh").read_text()
    assert 'grep -q "^  bct:" configs/thesis-cub-subset.yaml' in gate
    text = (REPO / "configs" / "thesis-cub-subset.yaml").read_text()
    assert bool(re.search(r"^  bct:", text, flags=re.M)) == TUNED_MORE.is_file()
    assert ("bct" in _cells("thesis-cub-subset.yaml")) == TUNED_MORE.is_file()


def test_the_confirmatory_matrix_tests_the_lead_on_seeds_no_other_run_used():
    """configs/thesis-cub-subset-confirm.yaml runs the ablation variant whose lead it tests
    (the same hyperparameters, the test protocol) beside the untrained reference, on seeds
    that neither the test matrices nor the tunings use, and its claim names just those."""
    confirm = load_config(REPO / "configs" / "thesis-cub-subset-confirm.yaml")
    used = {s for name in ("thesis-cub-subset.yaml", "thesis-cub-subset-ablations.yaml",
                           "thesis-lifelong.yaml", "thesis-lifelong-orders.yaml")
            for s in load_config(REPO / "configs" / name).seeds}
    for path in _tunings():
        tuned = yaml.safe_load(path.read_text())
        used |= set(tuned.get("tuned_on_seeds") or tuned["seeds"])
    assert len(confirm.seeds) == 5 and not set(confirm.seeds) & used
    cells = _cells("thesis-cub-subset-confirm.yaml")
    ablation = _cells("thesis-cub-subset-ablations.yaml")
    assert set(cells) == {"pretrained", "dkd-bn-frozen"}
    assert cells["dkd-bn-frozen"] == ablation["dkd-bn-frozen"]
    test = {c.strategy: c for c in _expanded("thesis-cub-subset.yaml") if c.seed == 0}
    mine = {c.strategy: c for c in _expanded("thesis-cub-subset-confirm.yaml")}
    # the same protocol: only the seed differs from the test matrix's pretrained cell
    assert test["pretrained"].model_copy(update={"seed": mine["pretrained"].seed}).hash == \
        mine["pretrained"].hash
    claims = yaml.safe_load((REPO / "docs" / "examples" / "claims-confirm.yaml").read_text())
    assert [(c["strategies"], c["versus"]) for c in claims["claims"]] == [
        (["dkd-bn-frozen"], "pretrained")]
