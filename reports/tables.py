"""Comparison tables: strategies x metrics, mean ± std and 95% CI over seeds, paired tests.

One table per scenario (or per ``split_by`` group, see :func:`reports.load.load_results`).
Columns, each named for its gallery: first the chosen metric on the **seen** gallery (the
test images of every class learnt so far, searched together, as a deployed system would):
its final value and its average incremental value over the stream (Rebuffi et al. 2017);
then **per-task** values (each task's own test images as the gallery): final mean Recall@K
over tasks (every K in the store), final mAP@R, and for the chosen metric forgetting,
forgetting ratio, BWT, the mean of per-task values over the stream ("Per-task inc."), and
the last task's value after learning it (plasticity). Definitions:
``docs/metrics.md``. A value that is undefined for a cell (forgetting, ratio and BWT with a
single experience) is NaN, never 0: it is left out of the mean and shown as "–".

Statistics, each documented in ``docs/metrics.md``:

* **CI**: a 95% **Student-t** interval of the mean over seeds by default
  (:func:`metrics.statistics.mean_ci`; ``ci="bootstrap"`` for a percentile bootstrap,
  which is too narrow with few seeds); NaN (undefined) with one seed, ``low == high``
  (degenerate) when every seed gave the same value. In the CSV (``ci_low``, ``ci_high``,
  ``ci_method``).
* **Two families.** Each table declares its **primary column** (``final_seen`` unless the
  report is told otherwise): its tests form the **confirmatory family**, **every pair of
  strategies** compared by a two-sided **paired t-test over seeds**
  (``scipy.stats.ttest_rel``, runs with the same seed paired: same class order and
  initialisation), Holm-Bonferroni adjusted over all pairs (:func:`holm`;
  :attr:`Table.pairwise`). Every other column's tests (each strategy against the baseline
  and against the column's best) form the **secondary family**, adjusted on their own and
  labelled as such. A test is **undefined** with fewer than 2 paired seeds or when the
  paired differences have zero variance (t = d / 0): its p-value is NaN, it is shown as
  "n/a" and it is left out of its family (it does not count towards m).
* **†**: differs from the baseline, Holm-adjusted p < alpha within the column's family.
* **Bold**: the best mean of a column and every strategy *not distinguishable* from it
  (its test against the best is undefined or not significant after Holm within the
  column's family). Bold therefore means "not shown to be worse than the best", not "as
  good as the best": with few seeds many strategies are bold.
* **Δ vs the reference** (``pretrained``, the untrained model, when the results have it):
  a column of the per-seed differences of the primary column from the reference's, their
  mean and t interval; descriptive (its tests are the pairwise ones).
* **Critical differences** across strategies (Demšar 2006): a Friedman test over the
  seeds as blocks and the Nemenyi post-hoc test over mean ranks, from scikit-posthocs
  (:func:`rank_tests`), drawn by :func:`reports.comparison_plots.critical_difference`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metrics.errors import LrbenchError
from metrics.statistics import (  # noqa: F401 (re-exported)
    CI_SEED,
    N_RESAMPLES,
    bootstrap_ci,
    describe_ci,
    mean_ci,
    t_interval,
)
from reports.diagnostics import (  # noqa: F401 (re-exported)
    cell_values,
    cost_table,
    cross_model_table,
    loss_cells,
    loss_markdown,
    loss_table,
)
from reports.load import Results, summaries
from reports.stats import (  # noqa: F401 (re-exported)
    RankTests,
    _n_pairs,
    _p_text,
    _pair_adjusted,
    _per_seed,
    effect_for_power,
    holm,
    paired_p,
    pairwise_tests,
    power_note,
    rank_tests,
)

#: column id -> title
LABELS = {
    "final_seen": "Final", "avg_incremental_seen": "Avg inc.",
    "final_mean": "final", "forgetting": "Forgetting", "forgetting_ratio": "F. ratio",
    "bwt": "BWT", "avg_incremental": "Per-task inc.", "last_task": "Last task",
    "final_nri": "Final", "nri_cost": "No-backfill cost",
}
#: the reference strategy of the "Δ vs" column: the untrained model
REFERENCE = "pretrained"
#: the column id of the per-seed difference from the reference
DELTA = "delta_reference"
LOWER_IS_BETTER = {"forgetting", "forgetting_ratio", "nri_cost"}


def column_title(column: str, m: str) -> str:
    """The title of a summary column for metric title ``m``: ``Final R@1 seen``,
    ``Forgetting R@1`` (one naming for the comparison and the ablation tables)."""
    return f"{LABELS[column]} {m}" + (" seen" if column.endswith("_seen") else
                                      " never re-indexed" if column == "final_nri" else "")


def signed_interval(mean: float, low: float, high: float) -> str:
    """``+0.123 [+0.101, +0.145]`` (the interval left out when undefined)."""
    text = f"{mean:+.3f}"
    return text + (f" [{low:+.3f}, {high:+.3f}]" if np.isfinite(low) else "")


def metric_title(metric: str) -> str:
    """``recall@1`` -> ``R@1``, ``map_at_r`` -> ``mAP@R``."""
    return f"R@{metric.split('@')[1]}" if metric.startswith("recall@") else (
        "mAP@R" if metric == "map_at_r" else metric)


def latex_escape(text: str) -> str:
    """``text`` with the LaTeX specials that names and titles hold escaped (_, %, &)."""
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def html_table(rows: list[list[str]], cell: Callable[[str], str]) -> str:
    """An HTML table of ``rows`` (the first is the header), each text rendered by ``cell``
    (which escapes it)."""
    head, *body = rows
    out = ["<table><thead><tr>" + "".join(f"<th>{cell(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join(out + ["</tbody></table>"])


class _LongForm:
    """What a table in long form (``data``: one row per row label and column) shares."""

    data: pd.DataFrame

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(column id, title) in display order."""
        return list(dict.fromkeys(zip(self.data["column"], self.data["title"], strict=True)))

    @property
    def family_size(self) -> int:
        """m of the table's Holm family: its defined tests (finite ``p_value``)."""
        return int(np.isfinite(self.data["p_value"].astype(float)).sum())


@dataclass
class Table(_LongForm):
    """One scenario's comparison: long form (``data``), rendered by the ``to_*`` methods.

    ``data`` columns: strategy, column, title, mean, std, n, ci_low, ci_high, n_pairs,
    p_value, p_adjusted, significant (vs baseline), p_vs_best, p_vs_best_adjusted, best
    (the best mean of the column), bold (best or not distinguishable from it).
    """

    scenario: str
    metric: str
    baseline: str | None
    alpha: float
    data: pd.DataFrame
    #: the column whose tests form the confirmatory family
    primary: str = "final_seen"
    #: the interval shown (:data:`metrics.statistics.CI_METHODS`)
    ci_method: str = "t"
    #: every pair of strategies on the primary column (:func:`pairwise_tests`)
    pairwise: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the strategy of the Δ column, when the results have it
    reference: str | None = None
    #: Friedman test and Nemenyi post-hoc over mean ranks (:func:`rank_tests`), or None
    ranks: Any = None

    @property
    def family_size(self) -> int:
        """m of the confirmatory family: the defined pairwise tests on the primary column."""
        if self.pairwise.empty:
            return 0
        return int(np.isfinite(self.pairwise["p_value"].astype(float)).sum())

    @property
    def secondary_size(self) -> int:
        """m of the secondary family: the defined tests of every other column."""
        sec = self.data[self.data.family == "secondary"]
        return int(np.isfinite(sec["p_value"].astype(float)).sum()
                   + np.isfinite(sec["p_vs_best"].astype(float)).sum())

    @property
    def strategies(self) -> list[str]:
        """Row order: as the runs list them."""
        return list(dict.fromkeys(self.data["strategy"]))

    @property
    def paired_seeds(self) -> list[int]:
        """The distinct numbers of paired seeds of this table's tests against the baseline."""
        tested = self.data[self.data["n_pairs"] > 0] if self.baseline else self.data.iloc[:0]
        return sorted({int(n) for n in tested["n_pairs"]})

    def _cell(self, strategy: str, column: str, bold: tuple[str, str], dagger: str,
              undefined: str) -> str:
        row = self.data[(self.data.strategy == strategy) & (self.data.column == column)]
        if row.empty or not np.isfinite(row["mean"].iloc[0]):
            return "–"
        r = row.iloc[0]
        if column == DELTA:
            return "(reference)" if strategy == self.reference else signed_interval(
                r["mean"], r["ci_low"], r["ci_high"])
        text = f"{r['mean']:.3f}" + (f" ± {r['std']:.3f}" if np.isfinite(r["std"]) else "")
        if r["bold"]:
            text = f"{bold[0]}{text}{bold[1]}"
        if r["significant"]:
            return text + dagger
        tested = self.baseline is not None and strategy != self.baseline
        return text + (undefined if tested and not np.isfinite(r["p_value"]) else "")

    def _rows(self, bold: tuple[str, str], dagger: str, undefined: str) -> list[list[str]]:
        """Header, then one row per strategy: name, seeds, then every column's cell."""
        n = self.data.groupby("strategy")["n"].max()
        rows = [["strategy", "seeds", *(t for _, t in self.columns)]]
        rows += [[s, str(int(n[s])), *(self._cell(s, c, bold, dagger, undefined)
                                        for c, _ in self.columns)]
                 for s in self.strategies]
        return rows

    def legend(self) -> str:
        """Sentences under the table: the interval, the two families, bold, † and "(n/a)"."""
        primary = column_title(self.primary, metric_title(self.metric)) \
            if self.primary in LABELS else self.primary
        text = (f"Mean ± sample std over seeds ({describe_ci(self.ci_method)} in the CSV). "
                f"Confirmatory family: every pair of strategies on {primary}, paired t-test, "
                f"Holm over its {self.family_size} defined test(s); the other columns are a "
                f"secondary family ({self.secondary_size} defined tests, Holm on their own). "
                "Bold: best mean, or not distinguishable from it (paired t-test vs the best, "
                f"Holm-adjusted within the column's family, p ≥ {self.alpha:g} or undefined).")
        if self.baseline:
            text += (f" †: differs from `{self.baseline}`, paired t-test, Holm-adjusted "
                     f"p < {self.alpha:g} within the column's family; "
                     "(n/a): the test is undefined (fewer than 2 paired seeds or no spread "
                     "in the differences), no p-value.")
        if self.reference:
            text += (f" Δ vs {self.reference}: the mean per-seed difference of {primary} from "
                     f"`{self.reference}` (the untrained model) with its "
                     f"{describe_ci(self.ci_method).removesuffix(' over seeds')}: below 0, "
                     "the method ends worse than not learning at all.")
        return text

    def to_markdown(self) -> str:
        """A GitHub Markdown table; bold and † as in :meth:`legend`, "–" = undefined."""
        head, *body = self._rows(("**", "**"), " †", " (n/a)")
        lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML table (for report.html); bold and † as in :meth:`legend`."""
        import html

        def cell(text: str) -> str:  # the placeholders survive escaping
            return html.escape(text).replace("\0b", "<b>").replace("\0/b", "</b>")

        return html_table(self._rows(("\0b", "\0/b"), " †", " (n/a)"), cell)

    def to_latex(self) -> str:
        """A booktabs table (``\\usepackage{booktabs}``); bold and † as in :meth:`legend`."""
        cols = self.columns

        lines = [r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule",
                 "Strategy & " + " & ".join(latex_escape(t) for _, t in cols) + r" \\",
                 r"\midrule"]
        for s in self.strategies:
            cells = [self._cell(s, c, (r"\textbf{", "}"), r"$^\dagger$", " (n/a)")
                     .replace("±", r"$\pm$").replace("–", "--") for c, _ in cols]
            lines.append(latex_escape(s) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        caption = (f"% {latex_escape(self.scenario)}: mean $\\pm$ std over seeds; bold = best "
                   "or not distinguishable from it (Holm-adjusted paired t-test, p >= "
                   f"{self.alpha}); $^\\dagger$ = paired t-test vs "
                   f"{latex_escape(self.baseline or '-')}, Holm-adjusted "
                   f"p < {self.alpha}; n/a = undefined test; -- = undefined value; "
                   "definitions: docs/metrics.md")
        return caption + "\n" + "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Long form: one row per strategy and column, with mean, std, n, CI and p-values
        (raw and Holm-adjusted; empty = undefined)."""
        out = self.data.assign(scenario=self.scenario, baseline=self.baseline or "",
                               ci_method=self.ci_method)
        cols = ["scenario", "strategy", "column", "title", "mean", "std", "n", "ci_low",
                "ci_high", "ci_method", "family", "baseline", "n_pairs", "p_value",
                "p_adjusted", "significant", "p_vs_best", "p_vs_best_adjusted", "best", "bold"]
        return out[cols].to_csv(index=False, float_format="%.12g", lineterminator="\n")

    def pairwise_rows(self) -> list[list[str]]:
        """Header, then one row per pair: A, B, paired seeds, mean A - B with its interval,
        p, Holm-adjusted p and whether the pair is distinguishable."""
        head = ["A", "B", "seeds", f"A − B ({self.ci_method} 95% CI)", "p", "adjusted p",
                "distinguishable"]
        rows = [head]
        for r in self.pairwise.itertuples():
            rows.append([r.a, r.b, str(r.n_pairs), signed_interval(r.diff, r.ci_low, r.ci_high)
                         if np.isfinite(r.diff) else "–",
                         _p_text(r.p_value), _p_text(r.p_adjusted),
                         "**yes**" if r.distinct else ("n/a" if not np.isfinite(r.p_value)
                                                       else "no")])
        return rows

    def pairwise_markdown(self) -> str:
        """Every pair on the primary column as a Markdown table."""
        head, *body = self.pairwise_rows()
        lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---:|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def pairwise_csv(self) -> str:
        """Every pair on the primary column, one row each (empty = undefined)."""
        out = self.pairwise.assign(scenario=self.scenario, column=self.primary,
                                   metric=self.metric, ci_method=self.ci_method)
        cols = ["scenario", "metric", "column", "a", "b", "n_pairs", "mean_a", "mean_b",
                "diff", "ci_low", "ci_high", "ci_method", "p_value", "p_adjusted", "distinct"]
        return out[cols].to_csv(index=False, float_format="%.12g", lineterminator="\n")


def mark_best(data: pd.DataFrame, values: dict[tuple[str, str], pd.Series],
              skip: Sequence[str] = ()) -> pd.DataFrame:
    """Fill ``best`` (the best mean of each column) and ``p_vs_best`` (each other
    strategy's paired test against that best) of a table's long form; columns in ``skip``
    get neither. ``values[(strategy, column)]`` are per-seed values."""
    data = data.copy()
    data["best"] = False
    data["p_vs_best"] = np.nan
    for col in dict.fromkeys(data.column):
        sel = data.column == col
        means = data.loc[sel, "mean"].astype(float)
        if col in skip or not np.isfinite(means).any():
            continue
        target = means.min() if col in LOWER_IS_BETTER else means.max()
        top = sel & np.isclose(data["mean"].astype(float), target, rtol=0, atol=1e-12)
        data.loc[top, "best"] = True
        ref = data.loc[top, "strategy"].iloc[0]
        for i in data.index[sel & ~top & np.isfinite(data["mean"].astype(float))]:
            data.loc[i, "p_vs_best"] = paired_p(values[(data.loc[i, "strategy"], col)],
                                                values[(ref, col)])
    return data


def bold_from(data: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """``bold``: the best of a column, and every strategy whose adjusted test against it
    (``p_vs_best_adjusted``) is undefined or not below ``alpha``."""
    data = data.copy()
    distinct = np.isfinite(data["p_vs_best_adjusted"].astype(float)) & (
        data["p_vs_best_adjusted"].astype(float) < alpha)
    data["bold"] = data["best"] | (np.isfinite(data["mean"].astype(float))
                                   & data["column"].isin(data.loc[data.best, "column"])
                                   & ~distinct)
    return data


def mark_bold(data: pd.DataFrame, values: dict[tuple[str, str], pd.Series],
              alpha: float) -> pd.DataFrame:
    """:func:`mark_best`, every vs-best test Holm-adjusted as one family, then
    :func:`bold_from` (``best``, ``bold``, ``p_vs_best``, ``p_vs_best_adjusted``)."""
    data = mark_best(data, values)
    data["p_vs_best_adjusted"] = holm(data["p_vs_best"])
    return bold_from(data, alpha)


def _summary_columns(results: Results, cells: pd.DataFrame, metric: str,
                     reference: str | None) -> list[tuple[str, str]]:
    """(column id, title) of a comparison table, in display order."""
    finals = [m for m in results.metrics if m.startswith("recall@")] + (
        ["map_at_r"] if "map_at_r" in results.metrics else [])
    m = metric_title(metric)
    lead = [(c, column_title(c, m)) for c in ("final_seen", "avg_incremental_seen")]
    if cells[[c for c, _ in lead]].isna().all().all():
        lead = []  # a store from before the seen curves were recorded
    delta = [(DELTA, f"Δ vs {reference}")] if reference and lead else []
    # the gallery a deployed search holds, when measured (reports.compatibility)
    nri = [(c, column_title(c, m)) for c in ("final_nri", "nri_cost")
           if lead and not cells[c].isna().all()]
    return lead[:1] + delta + nri + lead[1:] + [
        (f"final:{x}", f"{metric_title(x)} per-task") for x in finals] + [
        (c, column_title(c, m)) for c in
        ("forgetting", "forgetting_ratio", "bwt", "avg_incremental", "last_task")]


def comparison_tables(results: Results, metric: str = "recall@1", baseline: str | None =
                      "finetune", alpha: float = 0.05, ci: str = "t",
                      primary: str = "final_seen", reference: str | None = REFERENCE
                      ) -> list[Table]:
    """One :class:`Table` per scenario (see the module docstring). ``primary``: the column
    of the confirmatory family (every pair compared); ``reference``: the strategy of the Δ
    column (left out when the scenario lacks it)."""
    cells = summaries(results, metric)
    tables = []
    for scenario in results.scenarios:
        sc = cells[cells.scenario == scenario]
        strategies = list(dict.fromkeys(sc.strategy))
        base = baseline if baseline in strategies else None
        ref = reference if reference in strategies else None
        columns = _summary_columns(results, sc, metric, ref)
        if primary not in {c for c, _ in columns}:
            raise LrbenchError(f"primary column {primary!r} is not a column of the table of "
                               f"{scenario!r}; use one of "
                               f"{', '.join(c for c, _ in columns if c != DELTA)}")
        rows, values = [], {}
        for col, title in columns:
            for s in strategies:
                if col == DELTA:
                    v = _per_seed(sc, s, primary) - _per_seed(sc, ref, primary)
                else:
                    v = _per_seed(sc, s, col)
                values[(s, col)] = v
                tested = base is not None and s != base and col != DELTA
                b = _per_seed(sc, base, col) if tested else None
                low, high = mean_ci(v, ci)
                rows.append({"strategy": s, "column": col, "title": title, "mean": v.mean(),
                             "std": v.std(ddof=1) if v.notna().sum() > 1 else np.nan,
                             "n": int(v.notna().sum()), "ci_low": low, "ci_high": high,
                             "family": ("primary" if col == primary else "none"
                                        if col == DELTA else "secondary"),
                             "n_pairs": _n_pairs(v, b) if tested else 0,
                             "p_value": paired_p(v, b) if tested else np.nan})
        data = mark_best(pd.DataFrame(rows), values, skip=(DELTA,))
        pairs = pairwise_tests({s: values[(s, primary)] for s in strategies}, alpha, ci)
        data["p_adjusted"] = np.nan
        data["p_vs_best_adjusted"] = np.nan
        # the confirmatory family: the pairwise tests on the primary column
        prim = data.family == "primary"
        best = data[prim & data.best]
        top = best.strategy.iloc[0] if len(best) else None
        for i in data.index[prim]:
            s = data.loc[i, "strategy"]
            if base is not None and s != base:
                data.loc[i, "p_adjusted"] = _pair_adjusted(pairs, s, base)
            if top is not None and s != top and np.isfinite(data.loc[i, "p_vs_best"]):
                data.loc[i, "p_vs_best_adjusted"] = _pair_adjusted(pairs, s, top)
        # the secondary family: every other column's tests, vs the baseline and vs the best
        sec = data.index[data.family == "secondary"]
        adjusted = holm(pd.concat([data.loc[sec, "p_value"], data.loc[sec, "p_vs_best"]],
                                  ignore_index=True))
        data.loc[sec, "p_adjusted"] = adjusted[:len(sec)]
        data.loc[sec, "p_vs_best_adjusted"] = adjusted[len(sec):]
        data = bold_from(data, alpha)
        data["significant"] = np.isfinite(data["p_adjusted"].astype(float)) & (
            data["p_adjusted"].astype(float) < alpha)
        higher = primary not in LOWER_IS_BETTER
        ranks = rank_tests({s: values[(s, primary)] for s in strategies}, higher, alpha)
        tables.append(Table(scenario, metric, base, alpha, data.reset_index(drop=True),
                            primary, ci, pairs, ref, ranks))
    return tables
