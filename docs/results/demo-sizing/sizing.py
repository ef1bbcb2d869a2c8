"""The demo's size, chosen by measurement: from the per-cell values of five candidate
settings (cells.csv, one row per finished cell of the stores the setting-*.yaml files
write), how many seeds and which strategies let the demo's report show fine-tuning and
joint training apart on the primary column (final Recall@1 on the seen-classes gallery)
of both streams, after Holm over every pair of its strategies (the report's confirmatory
family, reports/stats.py ``pairwise_tests``).

    .venv/bin/python docs/results/demo-sizing/sizing.py

rewrites the tables of docs/results/demo-sizing.md (between its ``<!-- tables`` markers);
tests/test_real_configs.py recomputes them from cells.csv and compares.
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
#: strategy sets tried on setting E; the first is the shipped demo's
CANDIDATES = {
    "the demo's": ["pretrained", "first_session", "finetune", "joint", "mmd_kd", "fecd", "dkd",
                 "bct"],
    "the demo's without bct": ["pretrained", "first_session", "finetune", "joint", "mmd_kd",
                             "fecd", "dkd"],
    "the demo's + lwf, replay": ["pretrained", "first_session", "finetune", "joint", "lwf",
                                 "replay", "mmd_kd", "fecd", "dkd", "bct"],
    "all of E's": None,
}


def fmt_p(p: float) -> str:
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


def effect_table(cells: pd.DataFrame) -> str:
    lines = ["| setting | stream | seeds | joint - finetune | sd of the differences "
             "| p (paired t) |",
             "|---|---|---|---|---|---|"]
    for (setting, scenario), df in cells.groupby(["setting", "scenario"]):
        ft = df[df.strategy == "finetune"].set_index("seed").final_seen
        jo = df[df.strategy == "joint"].set_index("seed").final_seen
        n = min(len(ft), len(jo), 6)  # every setting at its first 6 seeds: comparable
        d = (jo - ft).dropna().iloc[:n]
        p, _ = pair(df, ["finetune", "joint"], n)
        lines.append(f"| {setting}: {SETTINGS[setting]} | {scenario} | {n} | {d.mean():.3f} | "
                     f"{d.std(ddof=1):.3f} | {fmt_p(p)} |")
    return "\n".join(lines)


def holm_table(cells: pd.DataFrame) -> str:
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
    return pd.read_csv(HERE / "cells.csv", dtype={"config_hash": str})


def main() -> None:
    PAGE.write_text(page_with(PAGE.read_text(), load_cells()))


if __name__ == "__main__":
    main()
