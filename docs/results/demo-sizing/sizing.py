"""The demo's size, chosen by measurement: from the per-cell values of the candidate
settings (cells.csv, one row per finished cell of the stores the setting-*.yaml files
write, with the CPU that computed it), how many seeds and which strategies let the demo's
report show fine-tuning and joint training apart on the primary column (final Recall@1 on
the seen-classes gallery) of both streams, after Holm over every pair of its strategies
(the report's confirmatory family, reports/stats.py ``pairwise_tests``).

    .venv/bin/python docs/results/demo-sizing/sizing.py

rewrites the tables of docs/results/demo-sizing.md (between its ``<!-- tables`` markers);
tests/test_reports.py recomputes them from cells.csv and compares.

    .venv/bin/python docs/results/demo-sizing/sizing.py add SETTING STORE

appends a finished store's cells to cells.csv as rows of SETTING (replacing that setting's
rows), each with the CPU its ``result.json`` records.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from benchmarks.run.store import current_cells, machine_label, read_result  # noqa: E402
from reports.stats import pairwise_tests  # noqa: E402

SETTINGS = {
    "A": "3 tasks of 8, P x K 8 x 4, lr 0.002 (the demo until 2026-12)",
    "B": "4 tasks of 6, P x K 6 x 5",
    "C": "as A, lr 0.005",
    "D": "32 classes, 4 tasks of 8, P x K 8 x 4 (stopped at 75 of 208 cells)",
    "E": "as B on both streams, 13 strategies, 8 seeds",
    "E2": "E's fine-tuning and joint cells rerun on the Xeon (the same config hashes)",
    "F": "as E, 240 steps per experience",
    "G": "as F, 60 training images per class (lifelong stream only)",
    "H": "as E, 60 training images per class",
    "I": "F's class-incremental and G's lifelong stream, the demo's 6 strategies, 8 seeds",
}
#: the CPU of the cells computed before result.json recorded one (settings A-E): the
#: 2-core AVX2 development machine of 2026-11/12 (docs/run.md)
OLD_MACHINE = "AVX2 (unrecorded)"
#: the references every matrix carries and the two bounds
BASE = ["pretrained", "first_session", "finetune", "joint"]
#: strategy sets tried on setting E; the first is the shipped demo's
CANDIDATES: dict[str, list[str] | None] = {
    "the demo's": BASE + ["fecd", "bct"],
    "references and bounds only": BASE,
    "the demo's without bct": BASE + ["fecd"],
    "the three thesis methods": BASE + ["mmd_kd", "fecd", "dkd"],
    "the three thesis methods + bct": BASE + ["mmd_kd", "fecd", "dkd", "bct"],
    "all it ran": None,
}
#: the shipped demo's seeds: 0 .. DEMO_SEEDS - 1
DEMO_SEEDS = 6
#: the setting whose cells configs/demo.yaml runs (the same config hashes)
DEMO_SETTING = "E"
#: the setting measured to replace it (its Holm table is shown too)
NEXT_SETTING = "I"


def fmt_p(p: float) -> str:
    """A p-value in two significant digits (scientific notation below 0.001)."""
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def pair(df: pd.DataFrame, strategies: list[str] | None, seeds: int) -> tuple[float, float]:
    """finetune vs joint: raw and Holm-adjusted p over all pairs of ``strategies``."""
    sub = df[df.seed < seeds]
    names = strategies or sorted(sub.strategy.unique())
    values = {s: sub[sub.strategy == s].set_index("seed").final_seen for s in names}
    pw = pairwise_tests(values)
    row = pw[((pw.a == "finetune") & (pw.b == "joint"))
             | ((pw.a == "joint") & (pw.b == "finetune"))]
    return float(row.p_value.iloc[0]), float(row.p_adjusted.iloc[0])


def cpu(labels: pd.Series) -> str:
    """cells.csv machine labels shortened to their instruction set (AVX2, AVX512, ...) and
    any variable that narrowed it; several kinds joined, so a mixed setting shows."""
    def short(label: str) -> str:
        if label == OLD_MACHINE:
            return label.split(" (")[0]
        if "(" not in label:
            return label
        parts = [x.strip() for x in label.rsplit("(", 1)[1].rstrip(")").split(",")]
        return " ".join([parts[0], *[x for x in parts[1:] if "=" in x]])
    return " + ".join(dict.fromkeys(short(x) for x in labels))


def gaps(df: pd.DataFrame, seeds: int) -> pd.Series:
    """joint - finetune per seed, over the seeds 0 .. seeds - 1 that ran both."""
    def of(strategy: str) -> pd.Series:
        return df[(df.strategy == strategy) & (df.seed < seeds)].set_index("seed").final_seen
    return (of("joint") - of("finetune")).dropna()


def effect_table(cells: pd.DataFrame, seeds: int = 6) -> str:
    """Per setting and stream: the paired gap joint - finetune over seeds 0 .. seeds - 1
    (every setting ran at least 6), its spread and its two-sided paired t-test's p; for the
    settings run with 8 seeds, p and the smallest gap over all 8 too."""
    lines = [f"| setting | CPU | stream | joint - finetune (mean of seeds 0-{seeds - 1}) "
             "| sd of the differences | p (paired t) | p, 8 seeds | smallest gap, 8 seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for (setting, scenario), df in cells.groupby(["setting", "scenario"]):
        d = gaps(df, seeds)
        p, _ = pair(df, ["finetune", "joint"], seeds)
        eight = "", ""
        if len(d8 := gaps(df, 8)) == 8:
            eight = fmt_p(pair(df, ["finetune", "joint"], 8)[0]), f"{d8.min():.3f}"
        lines.append(f"| {setting}: {SETTINGS[setting]} | {cpu(df.machine)} | "
                     f"{scenario} | {d.mean():.3f} | {d.std(ddof=1):.3f} | {fmt_p(p)} | "
                     f"{eight[0]} | {eight[1]} |")
    return "\n".join(lines)


def holm_table(cells: pd.DataFrame, setting: str = "E",
               candidates: dict[str, list[str] | None] = CANDIDATES) -> str:
    """One setting: finetune vs joint, Holm-adjusted over all pairs of each candidate set
    the setting ran every strategy of, at 3 .. 8 seeds (the first n), with what the cells
    cost per worker of two."""
    e = cells[cells.setting == setting]
    ran = set(e.strategy)
    named = [set(n) for n in candidates.values() if n]
    # a named set the setting did not run all of is left out, and "all it ran" where it
    # repeats a named set
    candidates = {label: names for label, names in candidates.items()
                  if (set(names) <= ran if names else ran not in named)}
    lines = ["| strategies | seeds | Holm-adjusted p, synth-ci-small | "
             "Holm-adjusted p, synth-lifelong-small | both apart | cell-minutes / 2 workers |",
             "|---|---|---|---|---|---|"]
    for label, names in candidates.items():
        k = len(names) if names else e.strategy.nunique()
        for seeds in range(3, int(e.seed.max()) + 2):
            adj = [pair(e[e.scenario == sc], names, seeds)[1]
                   for sc in ("synth-ci-small", "synth-lifelong-small")]
            used = e[(e.seed < seeds) & (e.strategy.isin(names) if names else True)]
            apart = "yes" if max(adj) < 0.05 else "no"
            lines.append(f"| {label}: {k} ({k * (k - 1) // 2} pairs) | {seeds} | {fmt_p(adj[0])} | "
                         f"{fmt_p(adj[1])} | {apart} | {used.cell_s.sum() / 2 / 60:.1f} |")
    return "\n".join(lines)


PAGE = HERE.parent / "demo-sizing.md"
START, END = "<!-- tables: written by sizing.py -->\n", "<!-- /tables -->"


def tables(cells: pd.DataFrame) -> str:
    """Both tables, as the page holds them between its markers."""
    return ("\n### Fine-tuning against joint training, per setting\n\n" + effect_table(cells)
            + "".join(f"\n\n### Setting {name}: which seed count and strategy set keep them "
                      f"apart after Holm\n\n" + holm_table(cells, name)
                      for name in dict.fromkeys([DEMO_SETTING, NEXT_SETTING])
                      if name in set(cells.setting)) + "\n\n")


def page_with(text: str, cells: pd.DataFrame) -> str:
    """``text`` (the page) with the region between the markers replaced by ``tables``."""
    head, rest = text.split(START, 1)
    return head + START + tables(cells) + END + rest.split(END, 1)[1]


def load_cells() -> pd.DataFrame:
    """cells.csv: one row per finished cell of every setting measured."""
    return pd.read_csv(HERE / "cells.csv", dtype={"config_hash": str})


def store_cells(setting: str, store: Path) -> pd.DataFrame:
    """A finished store's cells of its current matrix (``current_cells``: a cell an older
    matrix left there is not one of them) as cells.csv rows of ``setting`` (final seen
    Recall@1, the cell's training and evaluation time, its config hash and CPU)."""
    current = current_cells(store)
    rows = []
    for path in sorted(store.glob("cells/*/result.json")):
        r = read_result(path)
        stale = current is not None and current.get(r["id"], "") not in (None,
                                                                         r["config_hash"])
        if r["status"] != "finished" or stale:
            continue
        c = r["config"]
        rows.append({"setting": setting, "scenario": c["scenario"]["name"],
                     "strategy": c["strategy"], "seed": c["seed"],
                     "final_seen": r["payload"]["summary"]["final_seen"],
                     "cell_s": r["payload"]["timings"]["total_s"],
                     "config_hash": r["config_hash"],
                     "machine": machine_label(r.get("host"))})
    if not rows:
        raise SystemExit(f"sizing.py: no finished cell under {store}/cells: run it first")
    return pd.DataFrame(rows)


def main(argv: list[str]) -> None:
    """Rewrite the page's tables from cells.csv (after ``add SETTING STORE``: with that
    store's cells as the setting's rows)."""
    cells = load_cells()
    if argv[:1] == ["add"] and len(argv) == 3 and argv[1] in SETTINGS:
        new = store_cells(argv[1], Path(argv[2]))
        cells = pd.concat([cells[cells.setting != argv[1]], new], ignore_index=True)
        tmp = HERE / "cells.csv.tmp"
        cells.to_csv(tmp, index=False, float_format="%.17g")
        tmp.replace(HERE / "cells.csv")
    elif argv:
        raise SystemExit(f"usage: sizing.py [add SETTING STORE], SETTING one of "
                         f"{', '.join(SETTINGS)}")
    PAGE.write_text(page_with(PAGE.read_text(), cells))


if __name__ == "__main__":
    main(sys.argv[1:])
