"""Report statistics: Holm, undefined tests, bootstrap CIs, the bold rule, what a test with
few seeds can show, undefined forgetting, and merging only like stores (hand-written stores)."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.cli import main
from benchmarks.errors import LrbenchError
from reports.load import load_results
from reports.page import build_report
from reports.tables import (
    bootstrap_ci,
    comparison_tables,
    effect_for_power,
    holm,
    paired_p,
    power_note,
    t_interval,
)


def brute_force_holm(p: list[float]) -> list[float]:
    """Holm-adjusted p-values by definition: the smallest level at which Holm's step-down
    procedure (reject the k-th smallest of m while p_(k) <= level / (m - k)) rejects each
    hypothesis, searched over every level where a decision can change (1 when none
    below 1 does). NaN: not a test."""
    finite = [i for i, v in enumerate(p) if v == v]
    m = len(finite)

    def rejected(level: float) -> set[int]:
        out: set[int] = set()
        for k, i in enumerate(sorted(finite, key=lambda i: (p[i], i))):
            if p[i] * (m - k) > level:
                break
            out.add(i)
        return out

    levels = sorted({min(1.0, p[i] * (m - k)) for i in finite for k in range(m)} | {1.0})
    adjusted = [float("nan")] * len(p)
    for i in finite:
        adjusted[i] = next((lv for lv in levels if i in rejected(lv)), 1.0)  # capped at 1
    return adjusted


# -- Holm ---------------------------------------------------------------------------------

def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


@pytest.mark.parametrize("seed", range(30))
def test_holm_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 9))
    p = rng.choice([rng.uniform(0, 0.2), 0.01, 0.02, float("nan")], size=m).tolist()
    p = [v if rng.random() < 0.7 else float(rng.uniform(0, 1)) for v in p]  # ties and NaNs
    np.testing.assert_allclose(holm(p), brute_force_holm(p), rtol=1e-12, equal_nan=True)


def test_holm_leaves_undefined_tests_out_of_the_family():
    # with the NaN counted, m would be 3 and the first adjusted p 0.03
    out = holm([0.01, float("nan"), 0.02])
    assert np.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.02])


def test_holm_against_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(7)
    for _ in range(20):
        p = rng.uniform(0, 0.3, size=int(rng.integers(1, 12)))
        expected = multitest.multipletests(p, method="holm")[1]
        np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


# -- undefined tests, CIs, power ----------------------------------------------------------

def test_paired_test_is_undefined_without_spread_or_pairs():
    a = pd.Series([0.50, 0.55, 0.61, 0.58], index=[0, 1, 2, 3])
    b = pd.Series([0.40, 0.52, 0.50, 0.49, 0.9], index=[0, 1, 2, 3, 4])  # seed 4 unpaired
    assert paired_p(a, b) == pytest.approx(stats.ttest_rel(a, b.iloc[:4]).pvalue)
    two = pd.Series([0.5, 0.7], index=[0, 1])
    assert np.isnan(paired_p(two, two - 0.1))  # 2 seeds, constant difference: not p = 0
    assert np.isnan(paired_p(a, a + 0.1)) and np.isnan(paired_p(a, a))
    assert np.isnan(paired_p(a.iloc[:1], b.iloc[:1]))  # one pair
    assert np.isnan(paired_p(a, pd.Series([0.1, 0.2], index=[7, 8])))  # no common seed


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    v = [0.61, 0.58, 0.66, 0.60, 0.55]
    low, high = bootstrap_ci(v)
    assert low < np.mean(v) < high and min(v) <= low and high <= max(v)
    assert bootstrap_ci(v) == (low, high)
    assert bootstrap_ci(v, seed=1) != (low, high)  # the seed is what fixes it
    assert all(np.isnan(bootstrap_ci([0.5]))) and all(np.isnan(bootstrap_ci([])))
    assert bootstrap_ci([0.4, 0.4, 0.4]) == (0.4, 0.4)  # degenerate


def test_power_note_numbers():
    assert effect_for_power(3) == pytest.approx(3.0, abs=1.0)
    # Monte Carlo: at that effect, 80% of 3-seed experiments reach p < 0.05
    rng = np.random.default_rng(0)
    d = rng.normal(effect_for_power(3), 1.0, size=(40000, 3))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(3))
    assert np.mean(2 * stats.t.sf(np.abs(t), 2) < 0.05) == pytest.approx(0.8, abs=0.01)
    note = power_note(3, 0.05, m=12)
    assert "|t| > 4.30" in note and "p = 0.25 " in note and "12 tests" in note
    assert "no paired test is defined" in power_note(1)


# -- hand-written stores ------------------------------------------------------------------

def write_cell(store: Path, scenario: str, strategy: str, seed: int, r: list[list[float]],
               iterations: int = 5, hparams: dict[str, Any] | None = None,
               status: str = "finished", plugin: str | None = None) -> Path:
    """One result.json as the runner writes it (the fields the reports read); ``plugin``
    is the strategy's plugin when ``strategy`` is a label of a variant."""
    cfg = {"scenario": {"name": scenario, "dataset": "synth-fg", "schedule": "4+4"},
           "strategy": strategy, "hparams": hparams or {}, "seed": seed,
           "model": {"trunk": "small_cnn", "dim": 32},
           "training": {"iterations": iterations, "lr": 0.002, "device": "cpu"},
           "evaluation": {"ks": [1], "map_at_r": True}, "cache": {"features": True},
           "data_root": str(store), "cache_dir": None,
           "id": f"{scenario}__{strategy}__seed{seed}"}
    if plugin is not None:  # as the runner writes it: only for a variant
        cfg["plugin"] = plugin
    cfg["hash"] = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    result = {"id": cfg["id"], "config_hash": cfg["hash"], "config": cfg, "status": status,
              "versions": {"torch": "test"}}
    if status == "finished":
        t = len(r)
        result["payload"] = {
            "num_experiences": t, "r_matrix": {"recall": {"1": r}, "map_at_r": r},
            "seen": {"recall": {"1": [row[0] for row in r]}},
            # what the runner wrote for one experience: 0, not "undefined"
            "summary": {"k": 1, "forgetting": 0.0, "forgetting_ratio": 0.0, "bwt": 0.0,
                        "final_mean": float(np.mean(r[-1]))},
            "timings": {"total_s": 1.0}}
    path = store / "cells" / cfg["id"] / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


#: final Recall@1 per seed: `a` is best, `b` and `d` are within noise of it, `finetune`
#: is clearly worse (0.2 lower on every seed, with little spread)
NOISY = {
    "finetune": [0.41, 0.42, 0.37, 0.40, 0.40],
    "a": [0.60, 0.62, 0.58, 0.61, 0.59],
    "b": [0.59, 0.63, 0.56, 0.62, 0.59],
    "d": [0.62, 0.55, 0.60, 0.58, 0.57],
}


@pytest.fixture
def noisy_store(tmp_path) -> Path:
    store = tmp_path / "noisy"
    for strategy, values in NOISY.items():
        for seed, v in enumerate(values):
            write_cell(store, "one-exp", strategy, seed, [[v]])
    return store


def csv_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["strategy"], r["column"]): r for r in csv.DictReader(io.StringIO(text))}


def test_bold_marks_the_best_and_what_is_within_noise_of_it(noisy_store):
    (table,) = comparison_tables(load_results([noisy_store]))
    rows = csv_rows(table.to_csv())
    col = "final:recall@1"
    assert [s for s in NOISY if rows[(s, col)]["best"] == "True"] == ["a"]
    assert [s for s in NOISY if rows[(s, col)]["bold"] == "True"] == ["a", "b", "d"]
    # finetune is bold nowhere: its test against `a` is significant after Holm
    assert float(rows[("finetune", col)]["p_vs_best_adjusted"]) < 0.05
    assert float(rows[("b", col)]["p_vs_best_adjusted"]) >= 0.05
    md = table.to_markdown()
    assert "| finetune | 5 | 0.400 ± 0.019 |" in md
    assert "| b | 5 | **0.598 ± 0.028** † |" in md
    # two families. Confirmatory: every pair of the 4 strategies on the primary column
    # (Final R@1 seen), Holm over the 6 pairs; the dagger and bold of that column read it
    assert table.primary == "final_seen" and table.family_size == 6
    pairs = table.pairwise
    assert len(pairs) == 6 and {frozenset((r.a, r.b)) for r in pairs.itertuples()} == {
        frozenset((x, y)) for i, x in enumerate(NOISY) for y in list(NOISY)[i + 1:]}
    np.testing.assert_allclose(pairs["p_adjusted"], brute_force_holm(pairs["p_value"].tolist()),
                               rtol=1e-12)
    prim = table.data[table.data.family == "primary"].set_index("strategy")
    for s in ("a", "b", "d"):
        pair = pairs[pairs.a.isin([s, "finetune"]) & pairs.b.isin([s, "finetune"])].iloc[0]
        assert prim.loc[s, "p_adjusted"] == pair["p_adjusted"]
        assert prim.loc[s, "p_value"] == pytest.approx(pair["p_value"], rel=1e-12)
    # secondary: the 5 other defined columns (seen avg inc., R@1 and mAP@R per task,
    # per-task inc., last task), each strategy against finetune and against the best
    sec = table.data[table.data.family == "secondary"]
    raw = pd.concat([sec["p_value"], sec["p_vs_best"]]).tolist()
    adjusted = pd.concat([sec["p_adjusted"], sec["p_vs_best_adjusted"]]).tolist()
    assert table.secondary_size == 30 == int(np.isfinite(raw).sum())
    np.testing.assert_allclose(adjusted, brute_force_holm(raw), rtol=1e-12)


def test_bold_rule_with_a_lower_is_better_column():
    from reports.tables import mark_bold

    values = {("x", "forgetting"): pd.Series([0.10, 0.12, 0.11, 0.10]),
              ("y", "forgetting"): pd.Series([0.11, 0.11, 0.13, 0.09]),
              ("z", "forgetting"): pd.Series([0.30, 0.31, 0.29, 0.30])}
    data = pd.DataFrame([{"strategy": s, "column": c, "mean": v.mean()}
                         for (s, c), v in values.items()])
    out = mark_bold(data, values, alpha=0.05).set_index("strategy")
    assert out["best"].tolist() == [True, False, False]
    assert out["bold"].tolist() == [True, True, False]


def test_undefined_tests_get_no_dagger_and_no_p_value(tmp_path):
    store = tmp_path / "two"
    for seed in (0, 1):  # l2_kd is exactly 0.1 better on both seeds: t = 0.1 / 0
        write_cell(store, "sc", "finetune", seed, [[0.5 + 0.1 * seed]])
        write_cell(store, "sc", "l2_kd", seed, [[0.6 + 0.1 * seed]])
    write_cell(store, "sc", "once", 0, [[0.9]])  # one seed
    (table,) = comparison_tables(load_results([store]))
    rows = csv_rows(table.to_csv())
    for s in ("l2_kd", "once"):
        r = rows[(s, "final:recall@1")]
        assert r["p_value"] == "" and r["p_adjusted"] == "" and r["significant"] == "False"
    assert table.family_size == 0
    md = table.to_markdown()
    assert "†" not in md and "| l2_kd | 2 | **0.650 ± 0.071** (n/a) |" in md
    assert "| once | 1 | **0.900** (n/a) |" in md  # one seed: not distinguishable, bold
    assert rows[("once", "final:recall@1")]["ci_low"] == ""  # undefined CI
    assert "(n/a)" in table.to_latex() and "(n/a)" in table.to_html()


def test_one_experience_forgetting_is_undefined_not_zero(noisy_store, tmp_path):
    report = build_report([noisy_store], tmp_path / "r", formats=["md", "csv"])
    rows = csv_rows((tmp_path / "r" / "tables" / "one-exp.csv").read_text())
    for s in NOISY:
        for col in ("forgetting", "forgetting_ratio", "bwt"):
            assert rows[(s, col)]["mean"] == "" and rows[(s, col)]["n"] == "0"
        assert float(rows[(s, "avg_incremental")]["mean"]) == pytest.approx(np.mean(NOISY[s]))
    line = next(ln for ln in report.tables[0].to_markdown().splitlines() if "| a |" in ln)
    assert line.split(" | ")[6:9] == ["–", "–", "–"]  # Forgetting, F. ratio, BWT
    page = (tmp_path / "r" / "report.md").read_text()
    assert "docs/metrics.md" in page and "DESIGN.md" not in page
    assert (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").is_file()


def test_first_paragraph_says_what_the_seeds_can_show(noisy_store, tmp_path):
    build_report([noisy_store], tmp_path / "r", formats=["md"])
    page = (tmp_path / "r" / "report.md").read_text()
    first = page.split("\n\n")[1]
    assert first.startswith("**Statistics.**")
    assert "With 5 paired seeds" in first and "|t| > 2.78" in first
    assert "Holm over 6 tests" in first and "p = 0.0625" in first  # 4 strategies: 6 pairs
    assert "confirmatory" in first and "secondary" in first


# -- merging stores -----------------------------------------------------------------------

def two_budgets(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    for store, iterations in ((a, 5), (b, 50)):
        for seed in (0, 1, 2):
            for strategy in ("finetune", "l2_kd"):
                write_cell(store, "sc", strategy, seed + iterations,
                           [[0.5, 0.1], [0.4, 0.5 + 0.01 * seed]], iterations=iterations)
    return a, b


def test_merging_different_budgets_is_refused(tmp_path, capsys):
    a, b = two_budgets(tmp_path)
    with pytest.raises(LrbenchError, match=r"training\.iterations \(5 in .*, 50 in .*\).*"
                       r"--split-by training\.iterations"):
        load_results([a, b])
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.iterations" in err[0]


def test_split_by_gives_one_table_per_value(tmp_path):
    a, b = two_budgets(tmp_path)
    tables = comparison_tables(load_results([a, b], split_by=["training.iterations"]))
    assert [t.scenario for t in tables] == ["sc [training.iterations=5]",
                                            "sc [training.iterations=50]"]
    assert all(set(t.data["n"]) == {3} for t in tables)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r"), "--format", "csv",
                 "--split-by", "training.iterations"]) == 0
    assert len(list((tmp_path / "r" / "tables").glob("*.csv"))) == 2
    with pytest.raises(LrbenchError, match="cannot split by model.depth"):
        load_results([a, b], split_by=["model.depth"])


def test_strategy_settings_may_differ_but_not_between_seeds(tmp_path):
    store = tmp_path / "s"
    for seed in (0, 1):
        write_cell(store, "sc", "finetune", seed, [[0.5]], iterations=5)
        write_cell(store, "sc", "long", seed, [[0.6]], iterations=10, hparams={"lam": 1.0})
    (store / "matrix.yaml").write_text("name: s\nstrategies:\n  finetune: {}\n  long:\n"
                                       "    lam: 1.0\n    training: {iterations: 10}\n")
    assert len(load_results([store]).cells) == 4  # a strategy's own training override
    other = tmp_path / "o"
    write_cell(other, "sc", "long", 2, [[0.6]], iterations=10, hparams={"lam": 9.0})
    (other / "matrix.yaml").write_text((store / "matrix.yaml").read_text())
    with pytest.raises(LrbenchError, match=r"seeds of 'long'.*hparams\.lam"):
        load_results([store, other])


def test_execution_settings_do_not_block_a_merge(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_cell(a, "sc", "finetune", 0, [[0.5]])
    path = write_cell(b, "sc", "finetune", 1, [[0.6]])
    res = json.loads(path.read_text())
    res["config"]["training"]["device"] = "cuda"
    res["config"]["data_root"] = "/elsewhere"
    path.write_text(json.dumps(res))
    assert len(load_results([a, b]).cells) == 2


def test_same_cell_with_other_config_names_the_setting(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_cell(a, "sc", "finetune", 0, [[0.5]], iterations=5)
    write_cell(b, "sc", "finetune", 0, [[0.5]], iterations=6)
    with pytest.raises(LrbenchError, match=r"sc__finetune__seed0 .*training\.iterations: 5 vs 6"):
        load_results([a, b])


def test_brute_force_holm_is_itself_right():
    # the reference agrees with the textbook formula on every ordering of a small case
    for perm in itertools.permutations([0.001, 0.02, 0.03, 0.5]):
        p = list(perm)
        order = np.argsort(p)
        expected = np.empty(4)
        running = 0.0
        for k, i in enumerate(order):
            running = max(running, min(1.0, (4 - k) * p[i]))
            expected[i] = running
        np.testing.assert_allclose(brute_force_holm(p), expected)


def test_t_interval_equals_scipy_on_a_hand_case():
    """mean ± t_{0.975, n-1} s / sqrt(n): 0.44 ± 2.776 x 0.0158 / sqrt(5) for the finetune
    values below, as scipy.stats.t.interval gives it."""
    v = [0.42, 0.45, 0.43, 0.46, 0.44]
    low, high = t_interval(v)
    ref = stats.t.interval(0.95, 4, loc=np.mean(v), scale=stats.sem(v))
    assert (low, high) == pytest.approx(ref, abs=1e-15)
    half = stats.t.ppf(0.975, 4) * np.std(v, ddof=1) / np.sqrt(5)
    assert (low, high) == pytest.approx((0.44 - half, 0.44 + half), abs=1e-12)
    assert half == pytest.approx(0.019632, abs=1e-6)  # by hand: 2.7764 x 0.015811 / 2.2361
    assert all(np.isnan(t_interval([0.5]))) and t_interval([0.4, 0.4]) == (0.4, 0.4)
    # wider than the percentile bootstrap on the same five values
    b_low, b_high = bootstrap_ci(v)
    assert high - low > b_high - b_low


#: final seen R@1 per seed (the seen curve's last point): the untrained reference
#: `pretrained` (one value: no training, only the class order differs), and two methods
REF = {"pretrained": [0.30, 0.31, 0.30, 0.29, 0.30],
       "finetune": [0.25, 0.27, 0.24, 0.26, 0.25],
       "good": [0.40, 0.43, 0.41, 0.39, 0.42]}


def test_delta_vs_the_untrained_reference_by_hand(tmp_path):
    """The Δ column: per seed, the primary column minus pretrained's, its mean and t
    interval, computed here by hand; pretrained's own row reads (reference); the figures
    draw it as a dashed reference line."""
    store = tmp_path / "ref"
    for strategy, finals in REF.items():
        for seed, v in enumerate(finals):
            write_cell(store, "sc", strategy, seed, [[0.5, 0.1], [v, v]])
    build_report([store], tmp_path / "r", formats=["md", "csv", "svg"])
    rows = csv_rows((tmp_path / "r" / "tables" / "sc.csv").read_text())
    for s in ("finetune", "good"):
        d = [a - b for a, b in zip(REF[s], REF["pretrained"], strict=True)]
        r = rows[(s, "delta_reference")]
        assert r["title"] == "Δ vs pretrained" and r["family"] == "none"
        assert float(r["mean"]) == pytest.approx(sum(d) / 5, abs=1e-6)
        half = stats.t.ppf(0.975, 4) * np.std(d, ddof=1) / np.sqrt(5)
        assert float(r["ci_low"]) == pytest.approx(np.mean(d) - half, abs=1e-6)
        assert float(r["ci_high"]) == pytest.approx(np.mean(d) + half, abs=1e-6)
    assert float(rows[("finetune", "delta_reference")]["ci_high"]) < 0 < float(
        rows[("good", "delta_reference")]["ci_low"])  # finetune ends below not learning
    md = (tmp_path / "r" / "tables" / "sc.md").read_text()
    assert "| pretrained | 5 | 0.300 ± 0.007 † | (reference) |" in md
    # d = 0.10, 0.12, 0.11, 0.10, 0.12: mean 0.110, s 0.01, half-width 2.776 x 0.01 / 2.236
    assert "| good | 5 | **0.410 ± 0.016** † | +0.110 [+0.098, +0.122] |" in md
    for kind in ("seen_curves", "tradeoff"):
        svg = (tmp_path / "r" / "figures" / f"{kind}_sc_recall-1.svg").read_text()
        assert "pretrained (untrained)" in svg, kind


def test_rank_tests_on_a_hand_case():
    """Friedman and Nemenyi on 3 strategies x 4 seeds (higher is better), against values
    worked by hand: per-seed ranks A 1,2,1,1; B 3,3,3,2; C 2,1,2,3, so mean ranks 1.25,
    2.75, 2.0; Friedman chi2 = 12 / (n k (k+1)) sum R_j^2 - 3 n (k+1) = 0.25 * 210 - 48 =
    4.5 (no ties), p = exp(-4.5 / 2) with 2 degrees of freedom; Nemenyi (Demsar 2006, the
    formula of scikit-posthocs 0.17 ``posthoc_nemenyi_friedman``): q = |mean rank
    difference| / sqrt(k (k+1) / (6 n)), p = studentized-range survival at q sqrt(2), k
    groups, infinite df. The diagram draws exactly these ranks and p-values."""
    from scipy.stats import studentized_range

    from reports.stats import rank_tests

    seeds = [0, 1, 2, 3]
    values = {"A": pd.Series([0.9, 0.8, 0.85, 0.7], index=seeds),
              "B": pd.Series([0.5, 0.6, 0.55, 0.65], index=seeds),
              "C": pd.Series([0.7, 0.9, 0.6, 0.6], index=seeds)}
    got = rank_tests(values)
    assert got is not None and got.blocks == 4
    assert got.mean_ranks.to_dict() == {"A": 1.25, "B": 2.75, "C": 2.0}
    assert got.friedman_stat == pytest.approx(4.5)
    assert got.friedman_p == pytest.approx(np.exp(-2.25))
    scale = np.sqrt(3 * 4 / (6 * 4))
    for a, b in [("A", "B"), ("A", "C"), ("B", "C")]:
        q = abs(got.mean_ranks[a] - got.mean_ranks[b]) / scale
        want = studentized_range.sf(q * np.sqrt(2), 3, np.inf)
        assert got.nemenyi.loc[a, b] == pytest.approx(want, rel=1e-6)
        assert got.nemenyi.loc[b, a] == pytest.approx(want, rel=1e-6)
    # lower is better reverses the ranks; a seed one strategy lacks is not a block
    low = rank_tests(values, higher_is_better=False)
    assert low.mean_ranks.to_dict() == {"A": 2.75, "B": 1.25, "C": 2.0}
    values["C"] = values["C"].drop(3)
    assert rank_tests(values).blocks == 3
