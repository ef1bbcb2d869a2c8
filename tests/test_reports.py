"""lrbench report: tables recomputed from result.json by hand, figures, pages, failures."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import main
from reports.page import build_report

REPO = Path(__file__).resolve().parents[1]


def per_seed_values(store: Path) -> dict[tuple[str, str, str], dict[int, float]]:
    """(scenario, strategy, column) -> {seed: value}, straight from the result.json files."""
    per: dict[tuple[str, str, str], dict[int, float]] = {}
    for path in sorted((store / "cells").glob("*/result.json")):
        res = json.loads(path.read_text())
        if res["status"] != "finished":
            continue
        sc, st = res["config"]["scenario"]["name"], res["config"]["strategy"]
        seed = res["config"]["seed"]
        p = res["payload"]
        for k, mat in p["r_matrix"]["recall"].items():
            per.setdefault((sc, st, f"final:recall@{k}"), {})[seed] = sum(mat[-1]) / len(mat[-1])
        m = p["r_matrix"]["map_at_r"]
        per.setdefault((sc, st, "final:map_at_r"), {})[seed] = sum(m[-1]) / len(m[-1])
        r = p["r_matrix"]["recall"]["1"]
        t = len(r)
        drops = [max(r[i][j] for i in range(j, t - 1)) - r[t - 1][j] for j in range(t - 1)]
        ratios = [(r[j][j] - r[t - 1][j]) / r[j][j] for j in range(t - 1) if r[j][j] > 0]
        bwt = [r[t - 1][j] - r[j][j] for j in range(t - 1)]
        inc = [sum(r[i][: i + 1]) / (i + 1) for i in range(t)]
        if "seen" in p:  # the seen-classes gallery: its last value and its mean (Rebuffi)
            curve = p["seen"]["recall"]["1"]
            per.setdefault((sc, st, "final_seen"), {})[seed] = curve[-1]
            per.setdefault((sc, st, "avg_incremental_seen"), {})[seed] = sum(curve) / len(curve)
            if "never_reindexed" in p:  # issue #30: the gallery embedded once, and its cost
                nri = p["never_reindexed"]["recall"]["1"]
                per.setdefault((sc, st, "final_nri"), {})[seed] = nri[-1]
                per.setdefault((sc, st, "nri_cost"), {})[seed] = curve[-1] - nri[-1]
        for col, vals in (("forgetting", drops), ("forgetting_ratio", ratios), ("bwt", bwt),
                          ("avg_incremental", inc), ("last_task", [r[t - 1][t - 1]])):
            per.setdefault((sc, st, col), {})[seed] = sum(vals) / len(vals)
    # issue #26: "Δ vs pretrained", each seed's final_seen minus the untrained model's
    for (sc, st, col), by_seed in list(per.items()):
        ref = per.get((sc, "pretrained", "final_seen"))
        if col == "final_seen" and ref is not None:
            per[(sc, st, "delta_reference")] = {
                seed: v - ref[seed] for seed, v in by_seed.items() if seed in ref}
    return per


def brute_force_rows(store: Path) -> dict[tuple[str, str, str], tuple[float, float | None, int]]:
    """(scenario, strategy, column) -> (mean, std, n), straight from the result.json files."""
    return {key: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None, len(v))
            for key, by_seed in per_seed_values(store).items() for v in [list(by_seed.values())]}


def check_statistics_match(store: Path, report_dir: Path, baseline: str = "finetune",
                           alpha: float = 0.05) -> None:
    """CI (Student-t, by its formula), raw and Holm-adjusted p-values and the dagger of
    every CSV row, recomputed from the result.json files with scipy and the brute-force
    Holm of test_statistics: the primary column's family is every pair of strategies (the
    pairwise CSV), the other columns' family their tests against the baseline and the
    best."""
    from scipy import stats
    from test_statistics import brute_force_holm

    per = per_seed_values(store)
    rows = table_rows(report_dir)
    for r in rows:
        v = per[(r["scenario"], r["strategy"], r["column"])]
        assert r["ci_method"] == "t"
        if len(v) < 2:
            assert r["ci_low"] == r["ci_high"] == "", r
        else:
            x = list(v.values())
            h = stats.t.ppf(0.975, len(x) - 1) * statistics.stdev(x) / math.sqrt(len(x))
            assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(
                (statistics.mean(x) - h, statistics.mean(x) + h), abs=1e-5), r
        base = per.get((r["scenario"], baseline, r["column"]))
        seeds = sorted(set(v) & set(base or {}))
        if (r["strategy"] == baseline or base is None or len(seeds) < 2
                or r["column"] == "delta_reference"):  # a reference, not a test
            expected = None
        else:
            diff = [v[s] - base[s] for s in seeds]
            expected = None if max(diff) - min(diff) < 1e-12 else stats.ttest_rel(
                [v[s] for s in seeds], [base[s] for s in seeds]).pvalue
        if expected is None:
            assert r["p_value"] == "" and r["significant"] == "False", r
        else:
            assert float(r["p_value"]) == pytest.approx(expected, rel=1e-4), r
    for scenario in {r["scenario"] for r in rows}:
        table = [r for r in rows if r["scenario"] == scenario]
        # confirmatory: every pair on the primary column
        pairs = list(csv.DictReader(io.StringIO(
            (report_dir / "pairwise" / f"{scenario}.csv").read_text())))
        names = list(dict.fromkeys(r["strategy"] for r in table))
        assert len(pairs) == len(names) * (len(names) - 1) // 2
        raw = []
        for pr in pairs:
            a, b = per[(scenario, pr["a"], "final_seen")], per[(scenario, pr["b"], "final_seen")]
            seeds = sorted(set(a) & set(b))
            d = [a[s] - b[s] for s in seeds]
            p = float("nan") if len(d) < 2 or max(d) - min(d) < 1e-12 else stats.ttest_rel(
                [a[s] for s in seeds], [b[s] for s in seeds]).pvalue
            raw.append(p)
            assert float(pr["diff"]) == pytest.approx(statistics.mean(d), abs=1e-6)
        for pr, adj in zip(pairs, brute_force_holm(raw), strict=True):
            if adj != adj:
                assert pr["p_adjusted"] == "" and pr["distinct"] == "False", pr
            else:
                assert float(pr["p_adjusted"]) == pytest.approx(adj, rel=1e-4), pr
                assert (pr["distinct"] == "True") == (adj < alpha), pr
                for r in table:  # the dagger of the primary column reads its pair
                    if r["column"] == "final_seen" and {r["strategy"], baseline} == {
                            pr["a"], pr["b"]}:
                        assert float(r["p_adjusted"]) == pytest.approx(adj, rel=1e-4)
                        assert (r["significant"] == "True") == (adj < alpha), r
        # secondary: every other column's tests against the baseline and the best
        sec = [r for r in table if r["family"] == "secondary"]
        raw = [float(r[k]) if r[k] else float("nan") for k in ("p_value", "p_vs_best")
               for r in sec]
        adjusted = [r[k] for k in ("p_adjusted", "p_vs_best_adjusted") for r in sec]
        for got, adj in zip(adjusted, brute_force_holm(raw), strict=True):
            assert got == "" if adj != adj else float(got) == pytest.approx(adj, rel=1e-4)
        for r in sec:
            adj = float(r["p_adjusted"]) if r["p_adjusted"] else float("nan")
            assert (r["significant"] == "True") == (adj < alpha), r


def table_rows(report_dir: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted((report_dir / "tables").glob("*.csv")):
        rows += list(csv.DictReader(io.StringIO(path.read_text())))
    return rows


def check_tables_match(store: Path, report_dir: Path) -> int:
    expected = brute_force_rows(store)
    rows = table_rows(report_dir)
    assert {(r["scenario"], r["strategy"], r["column"]) for r in rows} == set(expected)
    for r in rows:
        mean, std, n = expected[(r["scenario"], r["strategy"], r["column"])]
        assert float(r["mean"]) == pytest.approx(mean, abs=1e-5), r
        assert int(r["n"]) == n
        if std is None:
            assert r["std"] == ""
        else:
            assert float(r["std"]) == pytest.approx(std, abs=1e-5), r
    return len(rows)


@pytest.fixture(scope="module")
def smoke_report(smoke_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(smoke_store), "--out", str(out)]) == 0
    return out


def test_smoke_tables_match_result_json(smoke_store, smoke_report):
    # 2 strategies x (seen final and avg inc., never-re-indexed final and its cost, 3 Ks,
    # mAP@R, forgetting, ratio, BWT, per-task inc., last task)
    assert check_tables_match(smoke_store, smoke_report) == 2 * 13
    check_statistics_match(smoke_store, smoke_report)


def test_demo_tables_match_result_json(tmp_path):
    """The store of `make demo` (results/demo), when it has been run here."""
    store = Path(os.environ.get("LRBENCH_DEMO_STORE", REPO / "results" / "demo"))
    if not (store / "cells").is_dir():
        pytest.skip("no demo store: run `make demo` first (or set LRBENCH_DEMO_STORE)")
    build_report([store], tmp_path, formats=["csv"])
    assert check_tables_match(store, tmp_path) > 0
    check_statistics_match(store, tmp_path)
    for path in store.glob("cells/*__[em][wa][cs]__seed*/result.json"):  # ewc and mas
        res = json.loads(path.read_text())
        term = res["config"]["strategy"]
        assert term in ("ewc", "mas"), path
        values = res["payload"]["losses"][term]
        assert values[0] is None and all(v > 0 for v in values[1:]), (path, values)


def test_markdown_marks_best_and_significance(smoke_report):
    md = (smoke_report / "tables" / "synth-tiny.md").read_text()
    lines = md.strip().splitlines()
    # the seen-classes gallery leads, every column is named for its gallery
    assert lines[0].startswith("| strategy | seeds | Final R@1 seen | Final R@1 never "
                               "re-indexed | No-backfill cost R@1 | Avg inc. R@1 seen | "
                               "R@1 per-task | R@2 per-task | R@4 per-task | mAP@R per-task | "
                               "Forgetting R@1")
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["finetune", "l2_kd"]
    assert md.count("**") >= 2 * 11  # a best value in every column
    rows = table_rows(smoke_report)
    assert all(r["baseline"] == "finetune" for r in rows)
    base = [r for r in rows if r["strategy"] == "finetune"]
    assert all(r["p_value"] == "" for r in base)  # nothing to test the baseline against
    for r in rows:  # the best is bold; bold elsewhere only where not told apart from it
        assert r["best"] == "False" or r["bold"] == "True", r
        if r["bold"] == "True" and r["best"] == "False":
            adj = r["p_vs_best_adjusted"]
            assert adj == "" or float(adj) >= 0.05, r
    # with 2 seeds a paired test is defined only when the differences vary, and † needs
    # Holm-adjusted p < 0.05; the cells with no defined test say so
    l2 = [r for r in rows if r["strategy"] == "l2_kd" and r["mean"]]
    assert ("(n/a)" in lines[3]) == any(not r["p_value"] for r in l2)
    tex = (smoke_report / "tables" / "synth-tiny.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex
    assert "l2\\_kd" in tex


def test_paired_t_test_against_scipy():
    import pandas as pd
    from scipy import stats

    from reports.tables import paired_p

    a = pd.Series([0.50, 0.55, 0.61, 0.58], index=[0, 1, 2, 3])
    b = pd.Series([0.40, 0.52, 0.50, 0.49, 0.9], index=[0, 1, 2, 3, 4])  # seed 4 unpaired
    assert paired_p(a, b) == pytest.approx(stats.ttest_rel(a, b.iloc[:4]).pvalue)
    # undefined, not p = 0 / p = 1: no spread in the differences, or one pair
    assert math.isnan(paired_p(a, a + 0.1)) and math.isnan(paired_p(a, a))
    assert math.isnan(paired_p(a.iloc[:1], b.iloc[:1]))


def _is_png(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        img.verify()
        return img.format == "PNG"


def test_every_figure_kind_is_a_valid_png_and_svg(smoke_report):
    figures = smoke_report / "figures"
    for kind in ("seen_curves", "r_matrix", "task_curves", "tradeoff", "recall_bars"):
        pngs = list(figures.glob(f"{kind}_*.png"))
        svgs = list(figures.glob(f"{kind}_*.svg"))
        assert len(pngs) == 1 and len(svgs) == 1, kind
        assert _is_png(pngs[0])
        from PIL import Image

        with Image.open(pngs[0]) as img:
            assert img.size[0] >= 500  # 200 dpi at paper size: legible when printed
        assert ET.parse(svgs[0]).getroot().tag.endswith("svg")


def test_pages_embed_everything(smoke_report):
    md = (smoke_report / "report.md").read_text()
    for kind in ("seen_curves", "r_matrix", "task_curves", "tradeoff", "recall_bars"):
        assert f"(figures/{kind}_" in md
    assert "## Matrix configuration" in md and "name: smoke" in md and "torch:" in md
    page = (smoke_report / "report.html").read_text()
    for kind in ("never_reindexed", "gallery_drift", "compatibility"):  # issue #30
        assert f"(figures/{kind}_" in md
    assert page.count("data:image/png;base64,") == 8
    assert "src='figures" not in page and "http" not in page.split("<body>")[1]


def test_failed_cell_is_listed_not_averaged(smoke_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(smoke_store, store)
    path = store / "cells" / "synth-tiny__l2_kd__seed1" / "result.json"
    res = json.loads(path.read_text())
    res.update(status="failed", reason="FloatingPointError: loss is nan at iteration 2")
    res.pop("payload")
    path.write_text(json.dumps(res))
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out)]) == 0
    check_tables_match(store, out)
    assert {r["n"] for r in table_rows(out) if r["strategy"] == "l2_kd"} == {"1"}
    md = (out / "report.md").read_text()
    assert "Failed cells" in md and "synth-tiny__l2_kd__seed1" in md and "loss is nan" in md
    assert "| l2_kd | 1 |" in (out / "tables" / "synth-tiny.md").read_text()


def test_images_left_out_are_named_on_the_page(smoke_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(smoke_store, store)
    path = store / "cells" / "synth-tiny__finetune__seed0" / "result.json"
    res = json.loads(path.read_text())
    res["config"]["skip_files"] = {"cub200": ["images/a.jpg", "images/b.jpg"]}
    path.write_text(json.dumps(res))
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out), "--format", "md,html"]) == 0
    md = (out / "report.md").read_text()
    assert "2 of cub200 (`images/a.jpg`, `images/b.jpg`)" in md
    assert "<code>images/b.jpg</code>" in (out / "report.html").read_text()
    assert main(["report", str(smoke_store), "--out", str(tmp_path / "plain"),
                 "--format", "md"]) == 0
    assert "Images left out" not in (tmp_path / "plain" / "report.md").read_text()


def test_stores_merge(smoke_store, smoke_report, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for store, seed in ((a, 0), (b, 1)):
        shutil.copytree(smoke_store, store)
        for cell in (store / "cells").glob(f"*seed{1 - seed}"):
            shutil.rmtree(cell)
    out = tmp_path / "merged"
    assert main(["report", str(a), str(b), "--out", str(out), "--format", "csv"]) == 0
    assert table_rows(out) == table_rows(smoke_report)
    # the same cell with another config in two stores cannot be merged
    other = b / "cells" / "synth-tiny__finetune__seed1" / "result.json"
    res = json.loads(other.read_text())
    shutil.copytree(other.parent, a / "cells" / other.parent.name)
    res["config_hash"] = "different"
    other.write_text(json.dumps(res))
    current = json.loads((b / "cells.json").read_text())  # b's own matrix says so too
    current[other.parent.name] = "different"
    (b / "cells.json").write_text(json.dumps(current))
    assert main(["report", str(a), str(b), "--out", str(out)]) == 2


def test_bad_report_input_is_one_line(tmp_path, smoke_store, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert main(["report", str(smoke_store), "--format", "pdf"]) == 2
    assert main(["report", str(smoke_store), "--metric", "recall@16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("lrbench: error: ") for line in err)
    assert "results store" in err[0] and "md, html" in err[1] and "recall@1" in err[2]


def test_loss_terms_per_experience_match_result_json(smoke_store, smoke_report):
    """The report's loss table: each strategy's steps and terms per experience, the mean
    over seeds of result.json's ``losses``, recomputed here by hand; l2_kd's term is
    absent ("–") in the first experience and its size shows next to the metric loss."""
    from reports.load import load_results
    from reports.tables import loss_table

    by: dict[tuple[str, str], dict[int, list[float]]] = {}
    for path in (smoke_store / "cells").glob("*/result.json"):
        res = json.loads(path.read_text())
        for term, values in res["payload"]["losses"].items():
            for i, v in enumerate(values):
                if v is not None:
                    by.setdefault((res["config"]["strategy"], term), {}).setdefault(
                        i, []).append(v)
    table = loss_table(load_results([smoke_store]), "synth-tiny")
    assert set(table.index) == set(by)
    for key, per_exp in by.items():
        for i in range(3):
            got = table.loc[key, f"exp {i}"]
            if i in per_exp:
                assert got == pytest.approx(statistics.mean(per_exp[i]), rel=1e-12), key
            else:
                assert got != got, key  # NaN: not added in that experience
    assert table.loc[("finetune", "steps")].tolist() == [3.0, 3.0, 3.0]
    md = (smoke_report / "report.md").read_text()
    assert "| l2_kd | l2_kd | – |" in md and "| finetune | steps | 3 | 3 | 3 |" in md
    assert "Every cell was computed by lrbench commit" in md
    assert "The cells that record their CPU ran on " in md and "kinds of CPU" not in md


def test_the_report_warns_when_cells_come_from_cpus_of_two_kinds(smoke_store, tmp_path):
    """Training rounds by the CPU's instruction set: a store whose cells ran on two kinds
    of CPU is flagged in one warning naming both; cells written before lrbench recorded
    the CPU are counted, not guessed; the per-cell CSV names each cell's CPU."""
    from reports.load import load_results
    from reports.provenance import provenance_lines

    store = tmp_path / "store"
    shutil.copytree(smoke_store, store)
    paths = sorted(store.glob("cells/*/result.json"))
    edits = {paths[0]: {"cpu": "Old CPU", "cpu_capability": "AVX2", "cpu_flags": "0badf1a6",
                        "isa_env": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}, paths[1]: None}
    for path, host in edits.items():
        cell = json.loads(path.read_text())
        cell["host"] = ({**cell["host"], **host} if host else
                        {k: cell["host"][k] for k in ("hostname", "platform", "cpus")})
        path.write_text(json.dumps(cell))
    lines = provenance_lines(load_results([store]))
    kinds = [line for line in lines if "kinds of CPU" in line]
    assert len(kinds) == 1 and "mix cells computed on 2 kinds of CPU" in kinds[0]
    assert "Old CPU (AVX2, flags 0badf1a6, ONEDNN_MAX_CPU_ISA=AVX2)" in kinds[0]
    assert "1 cell(s) record no CPU (written before lrbench recorded it)." in lines
    report = tmp_path / "report"
    assert main(["report", str(store), "--out", str(report), "--format", "csv"]) == 0
    text = (report / "cells" / "synth-tiny.csv").read_text()
    assert "Old CPU (AVX2, flags 0badf1a6, ONEDNN_MAX_CPU_ISA=AVX2)" in text
    assert ",unrecorded" in text


def test_cost_table_is_the_cells_own_timings(smoke_store, smoke_report):
    """The report's compute table on a real store: per strategy the median, min and max of
    result.json's ``timings.total_s`` plus ``shared_training_s`` (the loops it loaded, here
    the first one, which finetune and l2_kd share: what running it alone costs) and the
    seconds per 100 steps, recomputed by hand."""
    from reports.load import load_results
    from reports.tables import cost_table

    by: dict[str, list[tuple[float, float]]] = {}
    for path in (smoke_store / "cells").glob("*/result.json"):
        res = json.loads(path.read_text())
        timings = res["payload"]["timings"]
        by.setdefault(res["config"]["strategy"], []).append(
            (timings["total_s"] + timings.get("shared_training_s", 0.0),
             sum(res["payload"]["losses"]["steps"])))
    table = cost_table(load_results([smoke_store]), "synth-tiny", "finetune")
    assert list(table.index) == ["finetune", "l2_kd"]  # the matrix's order
    for strategy, cells in by.items():
        seconds = [t for t, _ in cells]
        row = table.loc[strategy]
        assert row["cells"] == len(cells)
        assert row["median s"] == pytest.approx(statistics.median(seconds), rel=1e-12)
        assert (row["min s"], row["max s"]) == (min(seconds), max(seconds))
        assert row["s per 100 steps"] == pytest.approx(
            statistics.median(100 * t / n for t, n in cells), rel=1e-12)
        assert row["x finetune"] == pytest.approx(
            row["median s"] / statistics.median(t for t, _ in by["finetune"]), rel=1e-12)
    md = (smoke_report / "report.md").read_text()
    head = "| strategy | cells | median s | min s | max s | x finetune | s per 100 steps |"
    rows = md.split(head)[1].split("\n\n")[0].strip().splitlines()[1:]
    assert [r.split(" | ")[0] for r in rows] == ["| finetune", "| l2_kd"]
    assert rows[0].split(" | ")[5] == "1.000"  # finetune against itself
    cost = list(csv.DictReader(io.StringIO(
        (smoke_report / "cost" / "synth-tiny.csv").read_text())))
    assert [r["strategy"] for r in cost] == ["finetune", "l2_kd"]
    assert float(cost[1]["median s"]) == pytest.approx(table.loc["l2_kd", "median s"],
                                                      rel=1e-5)


def test_cost_table_edge_cases(tmp_path):
    """Cells without a time are left out, cells without steps give "–" per 100 steps, the
    ratio is to the baseline (to the first row when the baseline did not run)."""
    from test_statistics import write_cell

    from reports.load import load_results
    from reports.tables import cost_table

    store = tmp_path / "s"
    for strategy, seconds in (("a", [10.0, 30.0, 20.0]), ("b", [40.0, 60.0, None])):
        for seed, t in enumerate(seconds):
            path = write_cell(store, "sc", strategy, seed, [[0.5]])
            res = json.loads(path.read_text())
            if t is None:
                del res["payload"]["timings"]
            else:
                res["payload"]["timings"]["total_s"] = t
                res["payload"]["losses"] = {"steps": [50.0, 50.0]} if strategy == "a" else {}
            path.write_text(json.dumps(res))
    results = load_results([store])
    table = cost_table(results, "sc", "b")
    assert table.loc["a"].tolist()[:4] == [3, 20.0, 10.0, 30.0]
    assert table.loc["b"].tolist()[:4] == [2, 50.0, 40.0, 60.0]  # the untimed cell left out
    assert table.loc["a", "s per 100 steps"] == 20.0  # median of 10, 30, 20 per 100 steps
    assert table.loc["b", "s per 100 steps"] != table.loc["b", "s per 100 steps"]  # NaN
    assert table["x b"].tolist() == [0.4, 1.0]
    assert cost_table(results, "sc", "absent").columns[4] == "x a"
    assert cost_table(results, "other").empty
    assert main(["report", str(store), "--out", str(tmp_path / "r"), "--format", "md,csv",
                 "--baseline", "b"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| a | 3 | 20.0 | 10.0 | 30.0 | 0.400 | 20.00 |" in md
    assert "| b | 2 | 50.0 | 40.0 | 60.0 | 1.000 | – |" in md
    # a cell resumed after its first experience (shared, or its own checkpoint) timed
    # only the second: per 100 steps over that one's 50 steps, never a whole cell's time
    path = write_cell(store, "sc", "a", 3, [[0.5]])
    res = json.loads(path.read_text())
    res["payload"]["timings"].update(total_s=12.5, resumed_after=1)
    res["payload"]["losses"] = {"steps": [50.0, 50.0]}
    path.write_text(json.dumps(res))
    resumed = cost_table(load_results([store]), "sc", "b")
    assert resumed.loc["a"].tolist()[:4] == [3, 20.0, 10.0, 30.0]
    assert resumed.loc["a", "s per 100 steps"] == 22.5  # median of 10, 30, 20 and 25
    # a strategy whose every cell resumed has no whole-cell time, only its cost per step
    for seed in (0, 1, 2):
        path = write_cell(store, "sc", "c", seed, [[0.5]])
        res = json.loads(path.read_text())
        res["payload"]["timings"].update(total_s=5.0 * (seed + 1), resumed_after=1)
        res["payload"]["losses"] = {"steps": [50.0, 50.0]}
        path.write_text(json.dumps(res))
    row = cost_table(load_results([store]), "sc", "b").loc["c"]
    assert row["cells"] == 0 and row[["median s", "min s", "max s", "x b"]].isna().all()
    assert row["s per 100 steps"] == 20.0  # median of 10, 20 and 30
    # a cell that loaded its training loops from one that trains alike (sdc beside the
    # finetune it wraps) costs its own seconds and those loops' where they ran: 1 + 29 s
    path = write_cell(store, "sc", "a", 4, [[0.5]])
    res = json.loads(path.read_text())
    res["payload"]["timings"].update(total_s=1.0, shared_training=[0, 1],
                                     shared_training_s=29.0)
    res["payload"]["losses"] = {"steps": [50.0, 50.0]}
    path.write_text(json.dumps(res))
    shared = cost_table(load_results([store]), "sc", "b").loc["a"]
    assert shared.tolist()[:4] == [4, 25.0, 10.0, 30.0]  # 10, 30, 20 and 30 s
    assert shared["s per 100 steps"] == 25.0  # median of 10, 30, 20, 25 and 30
    # times that are not seconds (a hand-edited file): the cell is untimed, not fatal
    for seed, timings in ((5, {"total_s": "12", "shared_training_s": 1.0}),
                          (6, {"total_s": float("nan")}),
                          (7, {"total_s": 30.0, "shared_training_s": "x"})):
        path = write_cell(store, "sc", "a", seed, [[0.5]])
        res = json.loads(path.read_text())
        res["payload"]["timings"] = timings
        res["payload"]["losses"] = {"steps": [50.0, 50.0]}
        path.write_text(json.dumps(res))
    odd = cost_table(load_results([store]), "sc", "b").loc["a"]
    assert odd.tolist()[:4] == [5, 30.0, 10.0, 30.0]  # seed 7 counts its own 30 s only


def test_cross_model_is_reported_when_measured(tmp_path):
    """With evaluation.cross_model the report shows the final model's queries against
    every earlier model's index, equal to result.json's matrix by hand."""
    from benchmarks.config import load_config
    from benchmarks.runner import run_matrix

    store = tmp_path / "cross"
    run_matrix(load_config(REPO / "configs" / "smoke.yaml", [
        "training.iterations=2", "seeds=[0]", "strategies={finetune: {}}",
        "evaluation.cross_model=true"]), store, progress=False)
    build_report([store], tmp_path / "r", formats=["md"])
    (res,) = [json.loads(p.read_text()) for p in store.glob("cells/*/result.json")]
    c = res["payload"]["cross_model"]["1"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Cross-model (backfill-free) R@1" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| finetune | ")
               and ln.count("|") == 5)
    assert row == (f"| finetune | {c[-1][0]:.3f} | {c[-1][1]:.3f} | "
                   f"{res['payload']['seen']['recall']['1'][-1]:.3f} |")


# -- ablation variants: their own table, the comparison untouched ---------------------------

#: per seed: (R@1 on task 0 after task 1 = the final seen value, last task's R@1);
#: task 0 was 0.80 after learning it, so forgetting = 0.80 - the first value
ABLATION = {
    "finetune": [(0.40, 0.90), (0.42, 0.91), (0.38, 0.89), (0.41, 0.92), (0.39, 0.90)],
    "m": [(0.60, 0.90), (0.63, 0.88), (0.58, 0.91), (0.62, 0.90), (0.61, 0.89)],
    "m-off": [(0.50, 0.91), (0.55, 0.90), (0.47, 0.92), (0.52, 0.90), (0.50, 0.91)],
    "m-same": [(0.61, 0.89), (0.61, 0.90), (0.60, 0.90), (0.61, 0.91), (0.62, 0.88)],
    "lone": [(0.55, 0.90), (0.56, 0.90), (0.54, 0.91), (0.57, 0.89), (0.55, 0.90)],
}
PLUGINS = {"m-off": "m", "m-same": "m", "lone": "absent"}


def ablation_store(folder: Path, strategies: dict[str, list[tuple[float, float]]],
                   seeds: dict[str, int] | None = None) -> Path:
    from test_statistics import write_cell

    for strategy, values in strategies.items():
        for seed, (old, last) in list(enumerate(values))[:(seeds or {}).get(strategy, 5)]:
            write_cell(folder, "sc", strategy, seed, [[0.80, 0.10], [old, last]],
                       plugin=PLUGINS.get(strategy))
    return folder


def brute_holm(p: list[float]) -> list[float]:
    """Holm by its definition: the i-th smallest of m times (m - i), running max, cap 1."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_ablation_table_against_hand_computed_values(tmp_path):
    """Each variant against its parent (plugin = another entry of the scenario), paired by
    seed: mean difference, paired t-test and Holm over the table's tests; an entry whose
    plugin did not run (`lone`) and the baseline are not variants."""
    from scipy import stats

    from reports.ablations import ablation_tables, variant_parents
    from reports.load import load_results
    from reports.tables import t_interval

    results = load_results([ablation_store(tmp_path / "s", ABLATION, {"m-same": 4})])
    assert variant_parents(results, "finetune") == {("sc", "m-off"): "m", ("sc", "m-same"): "m"}
    (table,) = ablation_tables(results, "recall@1", "finetune")
    got = table.data.set_index(["variant", "column"])
    assert list(dict.fromkeys(table.data.variant)) == ["m-off", "m-same"]
    raw = []
    for variant in ("m-off", "m-same"):
        n = 4 if variant == "m-same" else 5
        for col, pick in (("final_seen", lambda v: v[0]),
                          ("avg_incremental_seen", lambda v: (0.80 + v[0]) / 2),
                          ("forgetting", lambda v: 0.80 - v[0]), ("last_task", lambda v: v[1])):
            a = [pick(v) for v in ABLATION[variant][:n]]
            b = [pick(v) for v in ABLATION["m"][:n]]
            diff = [x - y for x, y in zip(a, b, strict=True)]
            row = got.loc[(variant, col)]
            assert row["parent"] == "m" and row["n_pairs"] == n
            assert row["delta"] == pytest.approx(statistics.fmean(diff), abs=1e-12)
            assert row["mean"] == pytest.approx(statistics.fmean(a), abs=1e-12)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval(diff))
            p = stats.ttest_rel(a, b).pvalue
            assert row["p_value"] == pytest.approx(p, rel=1e-9)
            raw.append(p)
    assert list(table.data.p_adjusted) == pytest.approx(brute_holm(raw), rel=1e-9)
    assert table.family_size == 8
    off = got.loc[("m-off", "final_seen")]
    assert off["delta"] == pytest.approx(-0.10, abs=1e-9) and off["significant"]
    assert not got.loc[("m-same", "final_seen")]["significant"]  # inside the noise


def test_ablations_leave_the_comparison_untouched(tmp_path):
    """The comparison table, its tests and its figures are those of the matrix without the
    variants; the variants get their own table, CSV, section and figure."""
    with_variants = ablation_store(tmp_path / "with", ABLATION)
    without = ablation_store(tmp_path / "without", {
        k: v for k, v in ABLATION.items() if k not in ("m-off", "m-same")})
    for store in (with_variants, without):
        assert main(["report", str(store), "--out", str(store / "r"),
                     "--format", "md,csv,png"]) == 0
    a, b = (s / "r" / "tables" / "sc.csv" for s in (with_variants, without))
    assert a.read_text() == b.read_text()  # same rows, same p-values, same Holm family
    out = with_variants / "r"
    assert not (without / "r" / "ablations").exists()
    rows = list(csv.DictReader(io.StringIO((out / "ablations" / "sc.csv").read_text())))
    assert {(r["variant"], r["parent"]) for r in rows} == {("m-off", "m"), ("m-same", "m")}
    md = (out / "report.md").read_text()
    assert "**Ablations** (sc)" in md
    assert "| m-off | m | 5 | 0.508 | -0.100 [" in md
    assert "over the 8 defined test(s) of this table" in md
    figure = out / "figures" / "ablations_sc_recall-1.png"
    assert _is_png(figure) and f"]({figure.relative_to(out)})" in md
    # the comparison figures draw the comparison's strategies only
    seen = (out / "figures" / "seen_curves_sc_recall-1.png").read_bytes()
    assert seen == (without / "r" / "figures" / "seen_curves_sc_recall-1.png").read_bytes()


def test_a_store_without_plugins_has_no_variants(smoke_store):
    """Stores written before cells recorded their plugin, and matrices without variants:
    no ablation table, every strategy in the comparison."""
    from reports.ablations import ablation_tables, variant_parents
    from reports.load import load_results

    results = load_results([smoke_store])
    assert variant_parents(results) == {}
    assert ablation_tables(results) == []


def test_ablation_edge_cases(tmp_path):
    """The baseline is never a variant; a variant whose parent's cells all failed stays a
    variant (the comparison's family does not change with failures); a variant with one
    paired seed has undefined tests, marked (n/a), left out of the Holm family."""
    from reports.ablations import ablation_tables, variant_parents
    from reports.load import load_results

    store = ablation_store(tmp_path / "s", ABLATION, {"m-same": 1})
    results = load_results([store])
    assert variant_parents(results, "m-off") == {("sc", "m-same"): "m"}
    (table,) = ablation_tables(results, "recall@1", "finetune")
    one = table.data[table.data.variant == "m-same"]
    assert set(one.n_pairs) == {1} and one.p_value.isna().all()
    assert table.family_size == 4  # m-off's four tests only
    assert "| m-same | m | 1 | 0.610 | +0.010 (n/a) |" in table.to_markdown()
    assert r"$\Delta$ Final R@1 seen" in table.to_latex()
    for seed in range(5):  # every cell of the parent failed
        path = store / "cells" / f"sc__m__seed{seed}" / "result.json"
        res = json.loads(path.read_text())
        path.write_text(json.dumps({**res, "status": "failed", "reason": "boom"}))
    failed = load_results([store])
    assert set(variant_parents(failed, "finetune")) == {("sc", "m-off"), ("sc", "m-same")}
    assert main(["report", str(store), "--out", str(tmp_path / "r"), "--format", "md"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| m-off | m | 0 | – | – | – | – | – |" in md  # no pair: nothing claimed
    table_md = (tmp_path / "r" / "tables" / "sc.md").read_text()
    assert "| m-off |" not in table_md and "| finetune | 5 |" in table_md


def test_claims_versus_others_leaves_variants_out(tmp_path):
    """``versus: others`` compares with the comparison table's strategies, not with the
    claimed strategy's (or anyone's) ablation variants."""
    import yaml

    from reports.claims import check_claims, load_claims
    from reports.load import load_results

    store = ablation_store(tmp_path / "s", ABLATION)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [
        {"name": "m best", "strategies": ["m"], "versus": "others", "direction": "higher"}]}))
    data = check_claims(load_results([store]), load_claims(path))
    assert sorted(data.versus) == ["finetune", "lone"]


def test_no_ablations_keeps_variants_in_the_comparison(tmp_path):
    """``--no-ablations``: a sweep's every entry in the comparison table, tested against the
    baseline in one family, and no ablation table."""
    store = ablation_store(tmp_path / "s", ABLATION)
    assert main(["report", str(store), "--out", str(tmp_path / "r"), "--format", "md,csv",
                 "--no-ablations"]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r" / "tables" / "sc.csv").read_text())))
    assert {r["strategy"] for r in rows} == set(ABLATION)
    assert not (tmp_path / "r" / "ablations").exists()
    assert "**Ablations**" not in (tmp_path / "r" / "report.md").read_text()


def recompute_from_cells(report_dir: Path) -> int:
    """Every mean, std and Student-t interval of the report's summary tables, recomputed
    with pandas and scipy from its per-cell CSVs (cells/<scenario>.csv) alone, to 1e-9;
    returns the number of values checked."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    checked = 0
    for path in sorted((report_dir / "tables").glob("*.csv")):
        table = pd.read_csv(path)
        cells = pd.read_csv(report_dir / "cells" / path.name)
        metric = "recall@1"
        for r in table.itertuples():
            col = r.column
            if col.startswith("final:"):
                quantity, m = "final_mean", col.removeprefix("final:")
            elif col == "delta_reference":
                quantity, m = "final_seen", metric
            else:
                quantity, m = col, metric
            pick = cells[(cells.quantity == quantity) & (cells.metric == m)]
            values = pick[pick.strategy == r.strategy].set_index("seed")["value"]
            if col == "delta_reference":
                ref = pick[pick.strategy == "pretrained"].set_index("seed")["value"]
                values = (values - ref).dropna()
            values = values.dropna()
            if values.empty:
                assert np.isnan(r.mean)
                continue
            assert r.mean == pytest.approx(values.mean(), abs=1e-9), (path, r)
            if len(values) > 1:
                assert r.std == pytest.approx(values.std(ddof=1), abs=1e-9), (path, r)
                if values.std() > 0:
                    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                                 scale=stats.sem(values))
                    assert (r.ci_low, r.ci_high) == pytest.approx((low, high), abs=1e-9), r
            checked += 1
    return checked


def test_every_summary_is_recomputed_from_the_per_cell_csv(smoke_report):
    assert recompute_from_cells(smoke_report) == 2 * 13


def _demo_sizing() -> Any:
    """docs/results/demo-sizing/sizing.py as a module."""
    import importlib.util

    path = REPO / "docs" / "results" / "demo-sizing" / "sizing.py"
    spec = importlib.util.spec_from_file_location("demo_sizing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_sizing_tables_are_recomputed_from_their_cells():
    """docs/results/demo-sizing.md: its tables are what sizing.py computes from cells.csv."""
    sizing = _demo_sizing()
    page = sizing.PAGE.read_text()
    assert sizing.page_with(page, sizing.load_cells()) == page


def test_a_store_becomes_sizing_rows_with_its_cpu(smoke_store, tmp_path):
    """sizing.py add: every finished cell of a store's current matrix is one row of the
    setting, its value the result's final seen Recall@1 and its CPU the label result.json
    records; a cell the current matrix no longer has is left out."""
    from benchmarks.run.store import machine_label

    sizing = _demo_sizing()
    rows = sizing.store_cells("F", smoke_store)
    results = [json.loads(p.read_text()) for p in sorted(smoke_store.glob("cells/*/result.json"))]
    assert len(rows) == len(results) == 4 and set(rows.setting) == {"F"}
    for r in results:
        row = rows[rows.config_hash == r["config_hash"]].iloc[0]
        assert row.final_seen == r["payload"]["summary"]["final_seen"]
        assert row.machine == machine_label(r["host"]) != "unrecorded"
        assert (row.scenario, row.strategy, row.seed) == (
            r["config"]["scenario"]["name"], r["config"]["strategy"], r["config"]["seed"])

    copy = tmp_path / "store"
    shutil.copytree(smoke_store, copy)
    current = json.loads((copy / "cells.json").read_text())
    gone = sorted(current)[0]
    (copy / "cells.json").write_text(json.dumps({k: v for k, v in current.items() if k != gone}))
    left = sizing.store_cells("F", copy)
    assert len(left) == 3 and gone not in {f"{r.scenario}__{r.strategy}__seed{r.seed}"
                                           for r in left.itertuples()}


def test_the_demo_is_the_measured_setting():
    """configs/demo.yaml runs the strategy set and seeds the sizing page chose, and exactly
    cells that the page's chosen setting measured (same config hashes), so the page's
    numbers are the demo's."""
    from benchmarks.config import expand_cells, load_config

    sizing = _demo_sizing()
    cells = sizing.load_cells()
    demo = expand_cells(load_config(REPO / "configs" / "demo.yaml"))
    assert sorted({c.strategy for c in demo}) == sorted(sizing.CANDIDATES["the demo's"])
    assert sorted({c.seed for c in demo}) == list(range(sizing.DEMO_SEEDS))
    assert len(demo) == 2 * len(sizing.CANDIDATES["the demo's"]) * sizing.DEMO_SEEDS
    assert {c.hash for c in demo} <= set(cells[cells.setting == sizing.DEMO_SETTING]
                                         .config_hash)


def recompute_ablations(report_dir: Path) -> int:
    """Every variant's mean and paired difference from its parent in the report's
    ablations/<scenario>.csv, recomputed from its per-cell CSV alone, to 1e-9; returns the
    number of rows checked."""
    import pandas as pd

    checked = 0
    for path in sorted((report_dir / "ablations").glob("*.csv")):
        cells = pd.read_csv(report_dir / "cells" / path.name)
        for r in pd.read_csv(path).itertuples():
            pick = cells[(cells.quantity == r.column) & (cells.metric == "recall@1")]
            v = pick[pick.strategy == r.variant].set_index("seed")["value"]
            p = pick[pick.strategy == r.parent].set_index("seed")["value"]
            assert r.mean == pytest.approx(v.mean(), abs=1e-9), (path, r)
            assert r.delta == pytest.approx((v - p).dropna().mean(), abs=1e-9), (path, r)
            checked += 1
    return checked


def test_the_ablation_tables_are_recomputed_from_the_per_cell_csv(tmp_path):
    """The per-cell CSV holds the ablation variants' cells too: every variant's mean and
    paired difference from its parent in ablations/<scenario>.csv, recomputed from it."""
    import pandas as pd

    store = ablation_store(tmp_path / "s", ABLATION)
    out = tmp_path / "r"
    assert main(["report", str(store), "--out", str(out), "--format", "md,csv"]) == 0
    cells = pd.read_csv(out / "cells" / "sc.csv")
    assert {"m-off", "m-same"} <= set(cells.strategy)
    assert recompute_ablations(out) == len(pd.read_csv(out / "ablations" / "sc.csv")) > 0


#: the generated reports of docs/results (the superseded ones had no per-cell values)
COMMITTED_REPORTS = ["cub", "lifelong", "tuning/report"]


@pytest.mark.parametrize("name", COMMITTED_REPORTS)
def test_the_committed_results_are_recomputed_from_their_cells(name):
    """docs/results commits, beside every summary table, the per-cell values it was
    computed from: every mean, std and Student-t interval (and every ablation row) is
    recomputed from them, so a reader can check the page without rerunning anything."""
    report = REPO / "docs" / "results" / name
    tables = sorted((report / "tables").glob("*.csv"))
    assert tables, f"{report} has no summary tables"
    assert all((report / "cells" / t.name).is_file() for t in tables), \
        f"{report}: a summary table without its per-cell CSV"
    assert recompute_from_cells(report) >= len(tables)
    if (report / "ablations").is_dir():
        assert recompute_ablations(report) > 0


@pytest.mark.parametrize("name", ["synth-all.yaml", "demo-bct-ablations.yaml"])
def test_the_demo_companions_run_the_demos_streams(name):
    """configs/synth-all.yaml and configs/demo-bct-ablations.yaml say they run the demo's
    streams, model and budget: the strategies they share with the demo are the demo's own
    cells (same config hashes) at the seeds they share."""
    from benchmarks.config import expand_cells, load_config

    demo = {(c.strategy, c.scenario.name, c.seed): c.hash
            for c in expand_cells(load_config(REPO / "configs" / "demo.yaml"))}
    other = {(c.strategy, c.scenario.name, c.seed): c.hash
             for c in expand_cells(load_config(REPO / "configs" / name))}
    shared = demo.keys() & other.keys()
    assert {k[0] for k in shared} >= {"finetune", "bct"}
    assert all(demo[k] == other[k] for k in shared)


def test_strategies_sharing_a_colour_never_share_a_marker_or_dashes():
    """Past the palette's 10 colours, a second strategy gets the first one's colour: its
    marker and dashes differ, so 22 strategies (every registered one) stay told apart; and
    label text is dark enough to read on white, whatever the colour."""
    from reports.plots import colours, dashes, markers, text_colour

    names = [f"s{i}" for i in range(22)]
    col, mark, dash = colours(names), markers(names), dashes(names)
    styles = {(col[n], mark[n], dash[n]) for n in names}
    assert len(styles) == len(names)
    assert len({mark[n] for n in names[:10]}) == 1 and dash[names[0]] == ()
    for rgb in col.values():
        r, g, b = text_colour(rgb)
        assert 0.2126 * r + 0.7152 * g + 0.0722 * b <= 0.45 + 1e-12
    assert text_colour((0.0, 0.2, 0.6)) == (0.0, 0.2, 0.6)  # dark colours are kept


def test_bars_and_drift_lines_tell_strategies_sharing_a_colour_apart(monkeypatch, tmp_path):
    """The Recall@K bars (no markers) hatch a strategy of the palette's second cycle, in
    the legend too; the gallery-drift panels give it the marker and dashes of the seen
    curves. With 12 strategies, the 1st and the 11th share a colour (the real CUB table)."""
    from types import SimpleNamespace

    import matplotlib
    import numpy as np
    import pandas as pd

    import reports.plots as plots
    from reports.compatibility_plots import gallery_drift

    names = [f"s{i}" for i in range(12)]
    t = 3
    cells = pd.DataFrame([{"scenario": "sc", "strategy": n, "seed": 0, "final:recall@1": 0.5}
                          for n in names])
    entry = {"never_reindexed": {"top_k_share_old": np.full((t, t), 0.3).tolist(),
                                 "gallery_share": np.full((t, t), 0.2).tolist(),
                                 "negative_flip_rate": [None, 0.1, 0.2], "top_k": 8}}
    results = SimpleNamespace(cells=cells, metrics=["recall@1"],
                              gallery={("sc", n, 0): entry for n in names})
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, *a: figures.append(fig) or [])
    plots.recall_bars(results, "sc", tmp_path, ["png"])
    gallery_drift(results, "sc", tmp_path, ["png"])
    bars, drift = figures
    ax = bars.axes[0]
    first, eleventh = ax.containers[0][0], ax.containers[10][0]
    assert first.get_facecolor() == eleventh.get_facecolor()
    assert not first.get_hatch() and eleventh.get_hatch()
    legend = [p.get_hatch() for p in ax.get_legend().get_patches()]
    assert not legend[0] and legend[10]
    for panel in drift.axes[:2]:
        lines = {line.get_label(): line for line in panel.get_lines()}
        a, b = lines["s0"], lines["s10"]
        assert matplotlib.colors.same_color(a.get_color(), b.get_color())
        assert (a.get_marker(), a.get_linestyle()) != (b.get_marker(), b.get_linestyle())


def test_the_protocol_screen_is_recomputed_from_its_cells():
    """docs/results/protocol-choice.md: its table, screen.md and screen.csv are what
    protocol-choice/table.py computes from the committed per-cell values
    (screen-cells.csv) alone; the margins of the settings run with several seeds are
    checked against scipy's t interval by hand."""
    import csv as csv_module
    import importlib.util

    import numpy as np
    from scipy import stats

    path = REPO / "docs" / "results" / "protocol-choice" / "table.py"
    spec = importlib.util.spec_from_file_location("screen_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    cells = table.read_cells()
    rows = table.summarise(cells)
    md = table.markdown(rows)
    assert md == (path.parent / "screen.md").read_text()
    page = table.PAGE.read_text()
    assert table.page_with(page, md) == page
    with open(path.parent / "screen.csv", newline="") as f:
        assert [{k: str(v) for k, v in r.items()} for r in rows] == list(csv_module.DictReader(f))
    several = [r for r in rows if r["seeds"] > 1]
    assert {r["setting"] for r in several} >= {"cub-b", "lifelong-b"}
    for r in several:
        by = {(c["strategy"], int(c["seed"])): float(c["final_seen"]) for c in cells
              if c["setting"] == r["setting"]}
        seeds = sorted({s for (_, s) in by})
        d = np.array([by["joint", s] - by["pretrained", s] for s in seeds])
        low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert r["joint_minus_pretrained_ci"] == f"{d.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


def test_critical_difference_colours_are_the_other_figures(monkeypatch, tmp_path):
    """The critical-difference diagram gives each strategy its colour of the other figures
    (darkened for text) and the untrained reference the black of its dashed line; every
    strategy of the ranks gets one (else scikit-posthocs would colour them its own way)."""
    from types import SimpleNamespace

    import matplotlib
    import pandas as pd
    import scikit_posthocs as sp

    import reports.comparison_plots as cp
    from reports.plots import colours, text_colour

    names = ["finetune", "pretrained", "joint", "ewc"]
    ranks = SimpleNamespace(mean_ranks=pd.Series([4.0, 2.0, 1.0, 3.0], index=names),
                            nemenyi=pd.DataFrame(0.5, index=names, columns=names),
                            alpha=0.05, blocks=5, friedman_p=0.01)
    table = SimpleNamespace(ranks=ranks, primary="final_seen", metric="recall@1",
                            scenario="sc", data=pd.DataFrame({"strategy": names}))
    seen = {}
    monkeypatch.setattr(sp, "critical_difference_diagram",
                        lambda *a, **k: seen.update(k["color_palette"] or {}))
    monkeypatch.setattr(cp, "_save", lambda *a: [])
    cp.critical_difference(table, tmp_path, ["png"])
    pal = colours(names)
    assert set(seen) == set(names)
    assert seen["pretrained"] == "#000000"
    for s in ("finetune", "joint", "ewc"):
        assert seen[s] == matplotlib.colors.to_hex(text_colour(pal[s]))
    assert len(set(seen.values())) == len(names)
