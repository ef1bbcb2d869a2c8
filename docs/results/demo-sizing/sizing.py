"""The demo's size, chosen by measurement: from the per-cell values of five candidate
settings (cells.csv, one row per finished cell of the stores the setting-*.yaml files
write), how many seeds and which strategies let the demo's report show fine-tuning and
joint training apart on the primary column (final Recall@1 on the seen-classes gallery)
of both streams, after Holm over every pair of its strategies (the report's confirmatory
family, reports/stats.py ``pairwise_tests``).

    .venv/bin/python docs/results/demo-sizing/sizing.py

rewrites the tables of docs/results/demo-sizing.md (between its ``<!-- tables`` markers);
tests/test_reports.py recomputes them from cells.csv and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from reports.stats import pairwise_tests  # noqa: E402

SETTINGS = {
    "A": "3 tasks of 8, P x K 8 x 4, lr 0.002 (the demo until 2026-12)",
    "B": "4 tasks of 6, P x K 6 x 5",
    "C": "as A, lr 0.005",
    "D": "32 classes, 4 tasks of 8, P x K 8 x 4 (stopped at 75 of 208 cells)",
    "E": "as B on both streams, 13 strategies, 8 seeds",
}
#: the references every matrix carries and the two bounds
BASE = ["pretrained", "first_session", "finetune", "joint"]
#: strategy sets tried on setting E; the first is the shipped demo's
CANDIDATES: dict[str, list[str] | None] = {
    "the demo's": BASE + ["fecd", "bct"],
    "references and bounds only": BASE,
    "the demo's without bct": BASE + ["fecd"],
    "the three thesis methods": BASE + ["mmd_kd", "fecd", "dkd"],
    "the three thesis methods + bct": BASE + ["mmd_kd", "fecd", "dkd", "bct"],
    "all of E's": None,
}
#: the shipped demo's seeds: 0 .. DEMO_SEEDS - 1
DEMO_SEEDS = 6


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


def effect_table(cells: pd.DataFrame, seeds: int = 6) -> str:
    """Per setting and stream: the paired gap joint - finetune over seeds 0 .. seeds - 1
    (every setting ran at least 6), its spread and its two-sided paired t-test's p."""
    lines = [f"| setting | stream | seeds | joint - finetune (mean of seeds 0-{seeds - 1}) "
             "| sd of the differences | p (paired t) |",
             "|---|---|---|---|---|---|"]
    for (setting, scenario), df in cells.groupby(["setting", "scenario"]):
        first = df[df.seed < seeds]
        ft = first[first.strategy == "finetune"].set_index("seed").final_seen
        jo = first[first.strategy == "joint"].set_index("seed").final_seen
        d = (jo - ft).dropna()
        p, _ = pair(df, ["finetune", "joint"], seeds)
        lines.append(f"| {setting}: {SETTINGS[setting]} | {scenario} | {len(d)} | "
                     f"{d.mean():.3f} | {d.std(ddof=1):.3f} | {fmt_p(p)} |")
    return "\n".join(lines)


def holm_table(cells: pd.DataFrame) -> str:
    """Setting E: finetune vs joint, Holm-adjusted over all pairs of each candidate set, at
    3 .. 8 seeds (the first n), with what the cells cost per worker of two."""
    e = cells[cells.setting == "E"]
    lines = ["| strategies | seeds | Holm-adjusted p, synth-ci-small | "
             "Holm-adjusted p, synth-lifelong-small | both apart | cell-minutes / 2 workers |",
             "|---|---|---|---|---|---|"]
    for label, names in CANDIDATES.items():
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
            + "\n\n### Setting E: which seed count and strategy set keep them apart after Holm\n\n"
            + holm_table(cells) + "\n\n")


def page_with(text: str, cells: pd.DataFrame) -> str:
    """``text`` (the page) with the region between the markers replaced by ``tables``."""
    head, rest = text.split(START, 1)
    return head + START + tables(cells) + END + rest.split(END, 1)[1]


def load_cells() -> pd.DataFrame:
    """cells.csv: one row per finished cell of the five settings."""
    return pd.read_csv(HERE / "cells.csv", dtype={"config_hash": str})


def main() -> None:
    """Rewrite the page's tables from cells.csv."""
    PAGE.write_text(page_with(PAGE.read_text(), load_cells()))


if __name__ == "__main__":
    main()
