"""lrbench report --claims: claims tested on hand-built stores whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from benchmarks.cli import main
from benchmarks.errors import LrbenchError
from reports.claims import check_claims, load_claims
from reports.load import load_results
from reports.tables import holm

SEEDS = range(5)
NOISE = [0.01, -0.01, 0.02, 0.0, -0.02]
BASE = [0.50 + 0.01 * s for s in SEEDS]
#: final union-of-seen Recall@1 per strategy and seed
FINAL = {
    "base": BASE,
    "good": [b + 0.10 + n for b, n in zip(BASE, NOISE, strict=True)],     # clearly higher
    "bad": [b - 0.10 + n for b, n in zip(BASE, NOISE[::-1], strict=True)],  # clearly lower
    "unsure": [b + n for b, n in zip(BASE, [0.05, -0.06, 0.04, -0.05, 0.03], strict=True)],
}


def write_cell(store: Path, strategy: str, seed: int, final: float, scenario: str = "toy"
               ) -> None:
    config = {"scenario": {"name": scenario, "dataset": "synth-fg", "schedule": "2+2"},
              "strategy": strategy, "hparams": {}, "seed": seed,
              "model": {"trunk": "small_cnn"}, "training": {"iterations": 3},
              "evaluation": {"ks": [1]}}
    r = [[0.6, 0.1], [0.3, final]]  # per-task R@1: the last task's value is ``final`` too
    result = {"id": f"{scenario}__{strategy}__seed{seed}", "config_hash": f"{strategy}{seed}",
              "config": config, "status": "finished",
              "payload": {"num_experiences": 2, "r_matrix": {"recall": {"1": r}},
                          "seen": {"recall": {"1": [0.6, final]}}}}
    folder = store / "cells" / result["id"]
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("claims") / "store"
    for strategy, values in FINAL.items():
        for seed in SEEDS:
            write_cell(out, strategy, seed, values[seed])
    return out


def claims_file(folder: Path, claims: list[dict], **top) -> Path:
    path = folder / "claims.yaml"
    path.write_text(yaml.safe_dump({**top, "claims": claims}, sort_keys=False))
    return path


CLAIMS = [
    {"name": "good beats base", "strategies": ["good"], "versus": "base",
     "direction": "higher"},
    {"name": "bad beats base by 0.02", "strategies": "bad", "versus": ["base"],
     "direction": "higher", "margin": 0.02},
    {"name": "unsure beats base", "strategies": ["unsure"], "versus": "base",
     "direction": "higher"},
    {"name": "good keeps the last task", "strategies": ["good"], "versus": "base",
     "column": "last_task", "direction": "within", "margin": 0.2},
]


def test_one_supported_one_not_one_inconclusive(store, tmp_path):
    data = check_claims(load_results([store]), load_claims(claims_file(tmp_path, CLAIMS)))
    assert data.attrs["verdicts"] == {
        "good beats base": "supported", "bad beats base by 0.02": "not supported",
        "unsure beats base": "inconclusive", "good keeps the last task": "supported"}
    # the numbers behind them: paired differences over the 5 seeds, one Holm family
    assert list(data.n_pairs) == [5, 5, 5, 5]
    assert data.mean_diff.tolist() == pytest.approx([0.10, -0.10, 0.002, 0.10])
    good, bad, unsure = (np.array(FINAL[s]) for s in ("good", "bad", "unsure"))
    base = np.array(BASE)
    within = max(stats.ttest_1samp(good - base + 0.2, 0, alternative="greater").pvalue,
                 stats.ttest_1samp(good - base - 0.2, 0, alternative="less").pvalue)
    # one test per claim: one-sided for a direction (beyond the margin), TOST for within
    raw = [stats.ttest_1samp(good - base, 0, alternative="greater").pvalue,
           stats.ttest_1samp(bad - base - 0.02, 0, alternative="greater").pvalue,
           stats.ttest_1samp(unsure - base, 0, alternative="greater").pvalue, within]
    assert data.p_value.tolist() == pytest.approx(raw)
    # the opposite of each claim, one-sided, checked against alpha / m outside the family
    d_good, d_unsure = good - base, unsure - base
    refute = [stats.ttest_1samp(d_good, 0, alternative="less").pvalue,
              stats.ttest_1samp(bad - base - 0.02, 0, alternative="less").pvalue,
              stats.ttest_1samp(d_unsure, 0, alternative="less").pvalue,
              min(1.0, 2 * min(stats.ttest_1samp(d_good - 0.2, 0, alternative="greater").pvalue,
                               stats.ttest_1samp(d_good + 0.2, 0, alternative="less").pvalue))]
    assert data.p_refute.tolist() == pytest.approx(refute)
    assert data.p_adjusted.tolist() == pytest.approx(holm(raw).tolist())  # m = 4, not 8
    assert set(data.family_size) == {4} and data.attrs["families"] == {"claims": 4}
    assert refute[1] < 0.05 / 4 < refute[2]  # bad: the other way; unsure: neither
    assert data.ci_high[1] < 0.02 < data.ci_high[2] and data.ci_low[2] < 0


def test_a_directional_claim_the_other_way_is_not_supported(store, tmp_path):
    claims = [{"name": "base beats good", "strategies": ["base"], "versus": "good",
               "direction": "higher"},
              {"name": "good within 0.01", "strategies": ["good"], "versus": "base",
               "direction": "within", "margin": 0.01}]
    data = check_claims(load_results([store]), load_claims(claims_file(tmp_path, claims)))
    assert data.attrs["verdicts"] == {"base beats good": "not supported",
                                      "good within 0.01": "not supported"}


def test_versus_others_and_a_claim_is_as_strong_as_its_weakest_comparison(store, tmp_path):
    claims = [{"name": "good best", "strategies": ["good"], "versus": "others",
               "direction": "higher"},
              {"name": "both beat base", "strategies": ["good", "unsure"], "versus": "base",
               "direction": "higher"}]
    data = check_claims(load_results([store]), load_claims(claims_file(tmp_path, claims)))
    assert sorted(data[data.claim == "good best"].versus) == ["bad", "base", "unsure"]
    per = {(r.claim, r.versus, r.strategy): r.verdict for r in data.itertuples()}
    # good vs unsure (mean 0.098, 5 seeds): one-sided p 0.0054, Holm x2 in the family of
    # 5 one-sided tests = 0.011 < 0.05, shown (tested both ways, 10 tests, it was not);
    # "both beat base" is as strong as its weakest comparison (unsure, p 0.47)
    assert per == {("good best", "bad", "good"): "supported",
                   ("good best", "base", "good"): "supported",
                   ("good best", "unsure", "good"): "supported",
                   ("both beat base", "base", "good"): "supported",
                   ("both beat base", "base", "unsure"): "inconclusive"}
    row = data[(data.claim == "good best") & (data.versus == "unsure")].iloc[0]
    assert row.p_value == pytest.approx(stats.ttest_1samp(
        np.array(FINAL["good"]) - np.array(FINAL["unsure"]), 0, alternative="greater").pvalue)
    assert row.p_adjusted == pytest.approx(2 * row.p_value)  # the 4th smallest of 5
    assert data.attrs["verdicts"] == {"good best": "supported",
                                      "both beat base": "inconclusive"}


def test_strategies_all_and_separate_families(store, tmp_path):
    """``strategies: all`` names every strategy but those compared with; each family is
    Holm-adjusted on its own and stated with its size."""
    claims = [{"name": "everything beats bad", "strategies": "all", "versus": "bad",
               "direction": "higher", "family": "vs bad"},
              {"name": "good beats base", "strategies": ["good"], "versus": "base",
               "direction": "higher"}]
    data = check_claims(load_results([store]), load_claims(claims_file(tmp_path, claims)))
    first = data[data.claim == "everything beats bad"]
    assert sorted(first.strategy) == ["base", "good", "unsure"]
    assert data.attrs["families"] == {"vs bad": 3, "claims": 1}
    assert first.p_adjusted.tolist() == pytest.approx(holm(first.p_value).tolist())
    second = data[data.claim == "good beats base"].iloc[0]
    assert second.p_adjusted == pytest.approx(second.p_value)  # a family of one
    from reports.claims import claims_markdown

    assert "`vs bad`: 3 defined test(s); `claims`: 1 defined test(s)" in claims_markdown(data)


def test_comparisons_only_where_both_strategies_ran(store, tmp_path):
    import shutil

    merged = tmp_path / "merged"
    shutil.copytree(store, merged)
    for strategy in ("base", "good"):  # a second scenario without bad and unsure
        for seed in SEEDS:
            write_cell(merged, strategy, seed, FINAL[strategy][seed] - 0.2, scenario="toy2")
    data = check_claims(load_results([merged]), load_claims(claims_file(tmp_path, CLAIMS)))
    assert list(zip(data.claim, data.scenario, strict=True)) == [
        ("good beats base", "toy"), ("good beats base", "toy2"),
        ("bad beats base by 0.02", "toy"), ("unsure beats base", "toy"),
        ("good keeps the last task", "toy"), ("good keeps the last task", "toy2")]
    only = {**CLAIMS[2], "scenarios": ["toy2"]}
    with pytest.raises(LrbenchError, match="no scenario of these results has both"):
        check_claims(load_results([merged]), load_claims(claims_file(tmp_path, [only])))


def test_cli_prints_verdicts_and_writes_markdown_and_csv(store, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["report", str(store), "--out", str(out), "--format", "md,csv",
            "--claims", str(claims_file(tmp_path, CLAIMS))]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "SUPPORTED      good beats base" in printed
    assert "NOT SUPPORTED  bad beats base by 0.02" in printed
    assert "INCONCLUSIVE   unsure beats base" in printed
    assert "good vs base on toy: final_seen recall@1 diff 0.100" in printed
    md = (out / "claims.md").read_text()
    assert "| good beats base | **supported** |" in md
    assert "Holm-Bonferroni within each family (`claims`: 4 defined test(s))" in md
    csv = (out / "claims.csv").read_text().splitlines()
    assert csv[0].startswith("claim,family,scenario,strategy,versus,metric,column,direction")
    assert len(csv) == 5


@pytest.mark.parametrize("claim,message", [
    ({"strategies": ["fecd"]}, "strategy 'fecd' is not in these results"),
    ({"versus": "basee"}, "strategy 'basee' is not in these results. Did you mean 'base'?"),
    ({"metric": "recall@4"}, "metric 'recall@4' is not in these results"),
    ({"scenarios": ["other"]}, "scenario 'other' is not in these results"),
    ({"versus": "good"}, "cannot be compared with itself"),
])
def test_a_claim_naming_what_the_store_lacks_is_one_line(store, tmp_path, claim, message,
                                                         capsys):
    bad = {**CLAIMS[0], **claim}
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out), "--claims",
                 str(claims_file(tmp_path, [bad]))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "claim 'good beats base'" in err[0]
    assert not out.exists()  # refused before anything is written


def test_a_malformed_claims_file_is_one_line(tmp_path):
    with pytest.raises(LrbenchError, match=r"claims\.0\.direction"):
        load_claims(claims_file(tmp_path, [{"name": "x", "strategies": ["a"], "versus": "b",
                                            "direction": "better"}]))
    with pytest.raises(LrbenchError, match="not found"):
        load_claims(tmp_path / "none.yaml")


def test_the_documented_example_file_is_valid():
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "claims.yaml"
    claims = load_claims(example).claims
    assert [c.direction for c in claims] == ["higher", "lower", "within", "higher", "higher"]
    assert claims[0].strategies == "all" and claims[0].versus == ["pretrained"]
    assert claims[4].versus == "others" and claims[3].versus == ["fecd-no-est"]
    assert {c.family for c in claims} == {"untrained", "thesis"}


def test_the_committed_claims_are_recomputed_from_the_committed_cells():
    """docs/results/claims/claims.csv, every comparison, from the per-cell values committed
    beside the reports (docs/results/*/cells/): the paired differences' mean and Student-t
    interval, the one-sided p of the claim and of its opposite, Holm within each family and
    the verdicts, written here from their definitions (docs/metrics.md, "Claims")."""
    import pandas as pd

    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    claims = pd.read_csv(results / "claims" / "claims.csv")
    cells = pd.concat([pd.read_csv(p) for p in sorted(results.glob("*/cells/*.csv"))])
    key = ["scenario", "strategy", "seed", "metric", "quantity", "train_exp", "eval_exp"]
    assert len(claims) > 40 and not cells.duplicated(key).any()
    p_one, p_opp = [], []
    for row in claims.itertuples():
        sel = cells[(cells.scenario == row.scenario) & (cells.metric == row.metric)
                    & (cells.quantity == row.column)]
        a = sel[sel.strategy == row.strategy].set_index("seed").value
        b = sel[sel.strategy == row.versus].set_index("seed").value
        d = (a - b).dropna()
        n, mean, se = len(d), d.mean(), d.std(ddof=1) / np.sqrt(len(d))
        m, t = row.margin, stats.t(len(d) - 1)
        assert n == row.n_pairs and np.isclose(mean, row.mean_diff, rtol=0, atol=1e-9)
        assert np.allclose(stats.t.interval(0.95, n - 1, loc=mean, scale=se),
                           (row.ci_low, row.ci_high), rtol=0, atol=1e-9)
        if row.direction == "higher":    # H1: d > m; the opposite: d < m
            p, opp = t.sf((mean - m) / se), t.cdf((mean - m) / se)
        elif row.direction == "lower":   # H1: d < -m; the opposite: d > -m
            p, opp = t.cdf((mean + m) / se), t.sf((mean + m) / se)
        else:                            # within: two one-sided tests; the opposite |d| > m
            p = max(t.sf((mean + m) / se), t.cdf((mean - m) / se))
            opp = min(1.0, 2 * min(t.sf((mean - m) / se), t.cdf((mean + m) / se)))
        p_one.append(p)
        p_opp.append(opp)
    claims["p_check"], claims["opp_check"] = p_one, p_opp
    assert np.allclose(claims.p_check, claims.p_value, rtol=1e-9, atol=1e-12)
    assert np.allclose(claims.opp_check, claims.p_refute, rtol=1e-9, atol=1e-12)
    for _, fam in claims.groupby("family"):
        size = len(fam)
        assert (fam.family_size == size).all()
        order = fam.p_check.sort_values().index  # Holm: step-down, then monotone
        adjusted = pd.Series(np.maximum.accumulate(
            [min(1.0, (size - i) * fam.p_check[k]) for i, k in enumerate(order)]), index=order)
        assert np.allclose(adjusted, fam.p_adjusted[order], rtol=1e-9, atol=1e-12)
        verdict = np.where(adjusted[fam.index] < 0.05, "supported",
                           np.where(fam.opp_check < 0.05 / size, "not supported",
                                    "inconclusive"))
        assert list(verdict) == list(fam.verdict)
    for _, claim in claims.groupby("claim"):
        v = set(claim.verdict)
        expected = ("supported" if v == {"supported"} else
                    "not supported" if "not supported" in v else "inconclusive")
        assert (claim.claim_verdict == expected).all()
