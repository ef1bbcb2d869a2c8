"""Comparison tables: strategies x metrics, mean ± std over seeds, best marked, paired test.

One table per scenario. Columns: final mean Recall@K over tasks (every K in the store),
final mAP@R, and for the chosen metric: forgetting, forgetting ratio, BWT, average
incremental value (DESIGN.md, "Metrics") and the last task's value after learning it
(plasticity). Each cell is mean ± sample std over seeds.

Significance: a two-sided **paired t-test over seeds** (``scipy.stats.ttest_rel``) of each
strategy against the baseline, pairing runs with the same seed (same class order and
initialisation). Needs at least 2 common seeds; p < ``alpha`` is marked with a dagger. With
3 seeds the test has little power: read it as "consistent across seeds", not as proof.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from reports.load import Results, summaries

#: (column id, title, higher is better)
LABELS = {
    "final_mean": "final", "forgetting": "Forgetting", "forgetting_ratio": "F. ratio",
    "bwt": "BWT", "avg_incremental": "Avg inc.", "last_task": "Last task",
}
LOWER_IS_BETTER = {"forgetting", "forgetting_ratio"}


def metric_title(metric: str) -> str:
    """``recall@1`` -> ``R@1``, ``map_at_r`` -> ``mAP@R``."""
    return f"R@{metric.split('@')[1]}" if metric.startswith("recall@") else (
        "mAP@R" if metric == "map_at_r" else metric)


@dataclass
class Table:
    """One scenario's comparison: long form (``data``), rendered by the ``to_*`` methods."""

    scenario: str
    metric: str
    baseline: str | None
    alpha: float
    data: pd.DataFrame  # strategy, column, title, mean, std, n, p_value, significant, best

    @property
    def strategies(self) -> list[str]:
        """Row order: as the runs list them."""
        return list(dict.fromkeys(self.data["strategy"]))

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(column id, title) in display order."""
        return list(dict.fromkeys(zip(self.data["column"], self.data["title"], strict=True)))

    def _cell(self, strategy: str, column: str, bold: tuple[str, str], dagger: str) -> str:
        row = self.data[(self.data.strategy == strategy) & (self.data.column == column)]
        if row.empty or not np.isfinite(row["mean"].iloc[0]):
            return "–"
        r = row.iloc[0]
        text = f"{r['mean']:.3f}" + (f" ± {r['std']:.3f}" if np.isfinite(r["std"]) else "")
        if r["best"]:
            text = f"{bold[0]}{text}{bold[1]}"
        return text + (dagger if r["significant"] else "")

    def _rows(self, bold: tuple[str, str], dagger: str) -> list[list[str]]:
        """Header, then one row per strategy: name, seeds, then every column's cell."""
        n = self.data.groupby("strategy")["n"].max()
        rows = [["strategy", "seeds", *(t for _, t in self.columns)]]
        rows += [[s, str(int(n[s])), *(self._cell(s, c, bold, dagger) for c, _ in self.columns)]
                 for s in self.strategies]
        return rows

    def to_markdown(self) -> str:
        """A GitHub Markdown table; best per column in bold, † = significant vs baseline."""
        head, *body = self._rows(("**", "**"), " †")
        lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML table (for report.html); best per column in bold, † significant."""
        import html

        head, *body = self._rows(("\0b", "\0/b"), " †")  # placeholders survive escaping

        def cell(text: str) -> str:
            return html.escape(text).replace("\0b", "<b>").replace("\0/b", "</b>")

        out = ["<table><thead><tr>" + "".join(f"<th>{cell(h)}</th>" for h in head)
               + "</tr></thead><tbody>"]
        out += ["<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in body]
        return "\n".join(out + ["</tbody></table>"])

    def to_latex(self) -> str:
        """A booktabs table (``\\usepackage{booktabs}``); best in bold, † significant."""
        cols = self.columns

        def esc(text: str) -> str:
            return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

        lines = [r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule",
                 "Strategy & " + " & ".join(esc(t) for _, t in cols) + r" \\", r"\midrule"]
        for s in self.strategies:
            cells = [self._cell(s, c, (r"\textbf{", "}"), r"$^\dagger$").replace("±", r"$\pm$")
                     .replace("–", "--") for c, _ in cols]
            lines.append(esc(s) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        caption = (f"% {esc(self.scenario)}: mean $\\pm$ std over seeds; bold = best; "
                   f"$^\\dagger$ = paired t-test vs {esc(self.baseline or '-')}, "
                   f"p < {self.alpha}")
        return caption + "\n" + "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Long form: one row per strategy and column, with mean, std, n and p-value."""
        out = self.data.assign(scenario=self.scenario, baseline=self.baseline or "")
        cols = ["scenario", "strategy", "column", "title", "mean", "std", "n", "baseline",
                "p_value", "significant", "best"]
        return out[cols].to_csv(index=False, float_format="%.6g", lineterminator="\n")


def paired_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided paired t-test p-value of two per-seed series (NaN with < 2 pairs)."""
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 2:
        return float("nan")
    diff = both.iloc[:, 0] - both.iloc[:, 1]
    if np.allclose(diff, diff.iloc[0]):  # constant difference: t is undefined
        return 1.0 if np.isclose(diff.iloc[0], 0) else 0.0
    return float(stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).pvalue)


def comparison_tables(results: Results, metric: str = "recall@1", baseline: str | None =
                      "finetune", alpha: float = 0.05) -> list[Table]:
    """One :class:`Table` per scenario (see the module docstring)."""
    cells = summaries(results, metric)
    finals = [m for m in results.metrics if m.startswith("recall@")] + (
        ["map_at_r"] if "map_at_r" in results.metrics else [])
    columns = [(f"final:{m}", metric_title(m)) for m in finals] + [
        (c, f"{LABELS[c]} {metric_title(metric)}") for c in
        ("forgetting", "forgetting_ratio", "bwt", "avg_incremental", "last_task")]
    tables = []
    for scenario in results.scenarios:
        sc = cells[cells.scenario == scenario]
        strategies = list(dict.fromkeys(sc.strategy))
        base = baseline if baseline in strategies else None
        rows = []
        for col, title in columns:
            for s in strategies:
                v = sc[sc.strategy == s].set_index("seed")[col].astype(float)
                p = (paired_p(v, sc[sc.strategy == base].set_index("seed")[col].astype(float))
                     if base is not None and s != base else float("nan"))
                rows.append({"strategy": s, "column": col, "title": title,
                             "mean": v.mean(), "std": v.std(ddof=1) if len(v) > 1 else np.nan,
                             "n": int(v.notna().sum()), "p_value": p,
                             "significant": bool(np.isfinite(p) and p < alpha)})
        data = pd.DataFrame(rows)
        data["best"] = False
        for col, _ in columns:
            sel = data.column == col
            means = data.loc[sel, "mean"]
            if means.notna().any():
                target = means.min() if col in LOWER_IS_BETTER else means.max()
                data.loc[sel & np.isclose(data["mean"], target), "best"] = True
        tables.append(Table(scenario, metric, base, alpha, data))
    return tables
