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
  (:func:`rank_tests`), drawn by :func:`reports.plots.critical_difference`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from metrics.errors import LrbenchError
from metrics.statistics import (  # noqa: F401 (re-exported)
    CI_SEED,
    N_RESAMPLES,
    bootstrap_ci,
    describe_ci,
    mean_ci,
    t_interval,
)
from reports.load import Results, summaries

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


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    NaN entries are undefined tests: they stay NaN and are not part of the family (m counts
    only the finite p-values). Adjusted p of the i-th smallest (0-based) of m is
    ``max_{r <= i} min(1, (m - r) p_(r))``, so adjusted p < alpha exactly where Holm's
    step-down procedure rejects at level alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    running = 0.0
    for rank, idx in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def paired_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided paired t-test p-value of two per-seed series (indexed by seed).

    NaN (undefined) with fewer than 2 seeds present in both, or when the paired
    differences have zero variance (also a constant non-zero difference: t would be
    infinite on a sample that shows no spread at all, so no p-value is claimed).
    """
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 2:
        return float("nan")
    diff = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
    if np.ptp(diff) <= 1e-12 * max(1.0, float(np.abs(diff).max())):
        return float("nan")
    return float(stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).pvalue)


def effect_for_power(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """True mean paired difference, in standard deviations of the differences, that a
    two-sided paired t-test over ``n`` seeds detects with probability ``power``."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def gap(d: float) -> float:  # the lower tail vanishes (and turns NaN) for large d
        nc = d * np.sqrt(n)
        return float(stats.nct.sf(crit, df, nc)
                     + np.nan_to_num(stats.nct.cdf(-crit, df, nc))) - power

    high = 1.0
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 1e-9, high))


def power_note(n: int, alpha: float = 0.05, m: int = 1) -> str:
    """What a paired t-test over ``n`` paired seeds can and cannot show (one sentence or
    two, the numbers computed here), with Holm over ``m`` tests."""
    if n < 2:
        return (f"With {n} paired seed(s) no paired test is defined: no †, and no strategy "
                "can be told apart from the best (all are bold).")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    text = (f"With {n} paired seeds the paired t-test has {df} degree(s) of freedom: "
            f"p < {alpha:g} needs |t| > {crit:.2f}, i.e. a mean difference above "
            f"{crit / np.sqrt(n):.2f} standard deviations of the per-seed differences")
    if m > 1:
        crit_m = stats.t.ppf(1 - alpha / (2 * m), df)
        text += (f"; with Holm over {m} tests the smallest p must be below {alpha / m:.2g} "
                 f"(|t| > {crit_m:.2f})")
    text += (f". Even a true difference of {effect_for_power(n, alpha):.1f} such standard "
             f"deviations is detected only 80% of the time (before correction). A test that "
             f"does not assume normal differences (sign-flip permutation) cannot go below "
             f"p = {2 / 2 ** n:.3g} with {n} seeds, so smaller p-values rest on that "
             "assumption. A missing † and a bold value mean \"not shown to differ\", not "
             "\"equal\".")
    return text


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


def _p_text(p: float) -> str:
    return "n/a" if not np.isfinite(p) else f"{p:.3g}"


def _per_seed(sc: pd.DataFrame, strategy: str, col: str) -> pd.Series:
    return sc[sc.strategy == strategy].set_index("seed")[col].astype(float)


def _n_pairs(a: pd.Series, b: pd.Series) -> int:
    return int(len(pd.concat([a, b], axis=1, join="inner").dropna()))


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


def pairwise_tests(values: dict[str, pd.Series], alpha: float = 0.05,
                   ci: str = "t") -> pd.DataFrame:
    """Every pair (a, b) of strategies, in row order, on one column: the paired seeds, both
    means over them, the mean difference a - b with its interval (``ci`` method, of the
    per-seed differences), the two-sided paired t-test's p, Holm-adjusted over all pairs
    (one family), and ``distinct`` (adjusted p < alpha)."""
    names = list(values)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = pd.concat([values[a], values[b]], axis=1, join="inner").dropna()
            d = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
            low, high = mean_ci(d, ci)
            rows.append({"a": a, "b": b, "n_pairs": len(d),
                         "mean_a": both.iloc[:, 0].mean(), "mean_b": both.iloc[:, 1].mean(),
                         "diff": float(d.mean()) if len(d) else np.nan,
                         "ci_low": low, "ci_high": high,
                         "p_value": paired_p(values[a], values[b])})
    out = pd.DataFrame(rows, columns=["a", "b", "n_pairs", "mean_a", "mean_b", "diff",
                                      "ci_low", "ci_high", "p_value"])
    out["p_adjusted"] = holm(out["p_value"]) if len(out) else []
    out["distinct"] = np.isfinite(out["p_adjusted"].astype(float)) & (
        out["p_adjusted"].astype(float) < alpha)
    return out


def _pair_adjusted(pairwise: pd.DataFrame, a: str, b: str) -> float:
    """The Holm-adjusted p of the pair {a, b} in ``pairwise`` (NaN when absent)."""
    row = pairwise[((pairwise.a == a) & (pairwise.b == b))
                   | ((pairwise.a == b) & (pairwise.b == a))]
    return float(row["p_adjusted"].iloc[0]) if len(row) else np.nan


@dataclass
class RankTests:
    """Friedman's test over blocks (seeds) and the Nemenyi post-hoc over mean ranks."""

    mean_ranks: pd.Series  # strategy -> mean rank (1 = best)
    friedman_stat: float
    friedman_p: float
    nemenyi: pd.DataFrame  # strategy x strategy p-values
    blocks: int
    alpha: float

    def distinct(self) -> pd.DataFrame:
        """strategy x strategy: True where Nemenyi's p < alpha."""
        return self.nemenyi < self.alpha


def rank_tests(values: dict[str, pd.Series], higher_is_better: bool = True,
               alpha: float = 0.05) -> RankTests | None:
    """Friedman test and Nemenyi post-hoc (scikit-posthocs) of the strategies' per-seed
    values, each seed a block and only seeds every strategy has; None with fewer than 3
    strategies or 2 complete blocks (the test is undefined)."""
    import scikit_posthocs as sp

    frame = pd.concat(values, axis=1).dropna()
    if frame.shape[1] < 3 or frame.shape[0] < 2:
        return None
    ranks = (frame if not higher_is_better else -frame).rank(axis=1, method="average")
    stat, p = stats.friedmanchisquare(*[frame[c].to_numpy() for c in frame.columns])
    nemenyi = sp.posthoc_nemenyi_friedman(frame if not higher_is_better else -frame)
    nemenyi.index = nemenyi.columns = list(frame.columns)
    return RankTests(ranks.mean(axis=0), float(stat), float(p), nemenyi, int(frame.shape[0]),
                     alpha)


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


def cell_values(results: Results, tables: list[Table]) -> dict[str, str]:
    """Per scenario, the tidy per-cell CSV from which every number of its table, pairwise
    table, figures and claims is recomputed: one row per cell and quantity (each summary
    column of every metric; each point of the seen curve, ``train_exp``; each R-matrix
    entry, ``train_exp`` and ``eval_exp``), with the cell's config hash and commit."""
    out = {}
    for t in tables:
        rows = []
        sc = results.cells[results.cells.scenario == t.scenario]
        for metric in results.metrics:
            per = summaries(results, metric)
            per = per[per.scenario == t.scenario]
            for r in per.itertuples():
                key = (r.scenario, r.strategy, int(r.seed))
                common = {"scenario": r.scenario, "strategy": r.strategy, "seed": int(r.seed),
                          "metric": metric}
                tail = {"config_hash": r.config_hash,
                        "commit": results.commits.get(key, "unknown")}
                extra = [c for c in ("final_nri", "nri_cost") if np.isfinite(getattr(r, c))]
                for col in ("final_seen", "avg_incremental_seen", "final_mean", "forgetting",
                            "forgetting_ratio", "bwt", "avg_incremental", "last_task", *extra):
                    value = getattr(r, col) if col != "final_mean" else float(
                        results.matrices[key][metric][-1].mean())
                    rows.append({**common, "quantity": col, "train_exp": "",
                                 "eval_exp": "", "value": value, **tail})
                curve = results.seen.get(key, {}).get(metric)
                for i, v in enumerate([] if curve is None else curve):
                    rows.append({**common, "quantity": "seen", "train_exp": i, "eval_exp": "",
                                 "value": float(v), **tail})
                mat = results.matrices[key][metric]
                for i in range(mat.shape[0]):
                    for j in range(mat.shape[1]):
                        rows.append({**common, "quantity": "r", "train_exp": i, "eval_exp": j,
                                     "value": float(mat[i, j]), **tail})
        if not sc.empty:
            out[t.scenario] = pd.DataFrame(rows).to_csv(index=False, float_format="%.17g",
                                                        lineterminator="\n")
    return out


def loss_table(results: Results, scenario: str) -> pd.DataFrame:
    """Each strategy's loss terms per experience, mean over seeds: rows (strategy, term),
    columns ``exp 0 .. exp T-1``. ``steps`` is the number of optimisation steps; ``metric``
    the metric loss; every other term is what the strategy adds (its regulariser's size,
    next to the metric loss); ``total`` is their sum. Empty for stores from before the
    terms were recorded."""
    rows: dict[tuple[str, str], list[list[float]]] = {}
    for (sc, strategy, _seed), terms in results.losses.items():
        if sc != scenario:
            continue
        for term, values in terms.items():
            per = rows.setdefault((strategy, term), [])
            for i, v in enumerate(values):
                while len(per) <= i:
                    per.append([])
                if v is not None and np.isfinite(v):
                    per[i].append(float(v))
    if not rows:
        return pd.DataFrame()
    order = list(dict.fromkeys(results.cells.strategy))
    rank = {"steps": 0, "metric": 1, "total": 3}
    keys = sorted(rows, key=lambda k: (order.index(k[0]) if k[0] in order else len(order),
                                       rank.get(k[1], 2), k[1]))
    t = max(len(v) for v in rows.values())
    data = [[float(np.mean(rows[k][i])) if i < len(rows[k]) and rows[k][i] else np.nan
             for i in range(t)] for k in keys]
    return pd.DataFrame(data, index=pd.MultiIndex.from_tuples(keys, names=["strategy", "term"]),
                        columns=[f"exp {i}" for i in range(t)])


def cost_table(results: Results, scenario: str, baseline: str | None = None) -> pd.DataFrame:
    """What each strategy's cells cost, from their ``result.json`` timings (``total_s``):
    rows strategy; columns ``cells`` (those that timed the whole stream), the median, min
    and max seconds of such a cell, the median relative to ``baseline``'s (``x
    <baseline>``; the first row's when ``baseline`` did not run here), and the median
    seconds per 100 optimisation steps over every timed cell (NaN without recorded steps).
    A cell's time is what its worker measured from building the cell to its last
    evaluation: training, the evaluation after each experience, and the per-seed parts of
    the caches; not the shared cache fill done before the workers start. A cell resumed
    from a checkpoint (its own, or a first experience shared with another cell) timed only
    the experiences after the resume: it counts in the seconds per 100 steps, over those
    experiences' steps, and not in the per-cell seconds (NaN for a strategy whose cells
    all resumed). Times depend on the machine and its load: compare the rows of one run.
    Empty when no cell recorded its time."""
    cells = results.cells
    if "train_s" not in cells:
        return pd.DataFrame()
    rows = cells[(cells.scenario == scenario) & cells.train_s.notna()]
    if rows.empty:
        return pd.DataFrame()
    resumed_after = rows.resumed_after if "resumed_after" in rows else pd.Series(0, rows.index)
    out: dict[str, list[float]] = {}
    for strategy, group in rows.groupby("strategy", sort=False):
        skip = resumed_after[group.index].fillna(0).astype(int).to_numpy()
        seconds = group.train_s.to_numpy(dtype=float)
        steps = [sum(v for v in (results.losses.get((scenario, strategy, int(seed)), {})
                                 .get("steps", []))[k:] if v)
                 for seed, k in zip(group.seed, skip, strict=True)]
        per100 = [100 * t / n for t, n in zip(seconds, steps, strict=True) if n]
        whole = seconds[skip == 0]
        out[str(strategy)] = [len(whole), *((float(np.median(whole)), float(whole.min()),
                                             float(whole.max())) if len(whole) else
                                            (np.nan,) * 3),
                              float(np.median(per100)) if per100 else np.nan]
    frame = pd.DataFrame.from_dict(out, orient="index", columns=[
        "cells", "median s", "min s", "max s", "s per 100 steps"])
    ref = baseline if baseline in frame.index else frame.index[0]
    frame.insert(4, f"x {ref}", frame["median s"] / frame.loc[ref, "median s"])
    frame.index.name = "strategy"
    return frame


def loss_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """:func:`loss_table` as text cells (header, rows): steps as integers, losses to 4
    significant digits, "–" where a term was not added in an experience."""
    head = ["strategy", "term", *table.columns]
    rows = [[str(strategy), str(term), *("–" if not np.isfinite(v) else (
        f"{v:.0f}" if term == "steps" else f"{v:.4g}") for v in row)]
        for (strategy, term), row in table.iterrows()]
    return head, rows


def loss_markdown(table: pd.DataFrame) -> str:
    """:func:`loss_table` as a Markdown table (empty text for an empty table)."""
    if table.empty:
        return ""
    head, rows = loss_cells(table)
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def cross_model_table(results: Results, scenario: str, metric: str) -> pd.DataFrame:
    """Backfill-free retrieval, when measured: per strategy (mean over seeds), ``metric`` of
    the final model's queries on the seen gallery embedded by the model after experience m
    (columns ``index of exp m``), beside ``rebuilt`` (the index re-embedded by the final
    model: the seen-gallery value). Empty when not measured or ``metric`` is not Recall@K."""
    per: dict[str, list[np.ndarray]] = {}
    rebuilt: dict[str, list[float]] = {}
    for key, by_metric in results.cross.items():
        if key[0] != scenario or metric not in by_metric:
            continue
        c = by_metric[metric]
        per.setdefault(key[1], []).append(c[-1, :-1])
        curve = results.seen.get(key, {}).get(metric)
        rebuilt.setdefault(key[1], []).append(float(curve[-1]) if curve is not None
                                              else np.nan)
    if not per:
        return pd.DataFrame()
    order = [s for s in dict.fromkeys(results.cells.strategy) if s in per]
    t = len(next(iter(per.values()))[0])
    data = {f"index of exp {m}": [float(np.mean([r[m] for r in per[s]])) for s in order]
            for m in range(t)}
    data["rebuilt"] = [float(np.mean(rebuilt[s])) for s in order]
    return pd.DataFrame(data, index=pd.Index(order, name="strategy"))


#: the columns of an ablation table: the headline and what explains it
ABLATION_COLUMNS = ("final_seen", "avg_incremental_seen", "forgetting", "last_task")


def variant_parents(results: Results, baseline: str | None = None) -> dict[tuple[str, str], str]:
    """(scenario, label) -> parent label, for every **ablation variant**: a matrix entry
    whose plugin is another entry of the same scenario (``fecd-no-est: {strategy: fecd,
    lambda_est: 0}`` beside ``fecd``). The baseline is never a variant."""
    frames = [f[["scenario", "strategy", "plugin"]] for f in (results.cells, results.failed)
              if len(f) and "plugin" in f]
    if not frames:
        return {}
    # failed cells count: a variant stays a variant when all its parent's cells failed
    pairs = pd.concat(frames).drop_duplicates()
    labels = {sc: set(g.strategy) for sc, g in pairs.groupby("scenario", sort=False)}
    return {(r.scenario, r.strategy): r.plugin for r in pairs.itertuples()
            if r.plugin != r.strategy and r.plugin in labels[r.scenario]
            and r.strategy != baseline}


@dataclass
class AblationTable(_LongForm):
    """One scenario's ablation variants, each against the strategy it varies (its parent).

    ``data`` (long form) columns: variant, parent, column, title, mean (the variant's),
    parent_mean (both over the seeds both ran), delta (mean of the per-seed differences
    variant - parent), ci_low, ci_high (95% interval of that mean difference, Student-t
    unless asked otherwise),
    n_pairs, p_value (paired t-test), p_adjusted (Holm over every variant x column test of
    this table: a family of its own, so the comparison table's tests do not depend on how
    many ablations ran) and significant.
    """

    scenario: str
    metric: str
    alpha: float
    data: pd.DataFrame

    def _rows(self, dagger: str, undefined: str = " (n/a)") -> list[list[str]]:
        """Header, then one row per variant: name, parent, paired seeds, its final seen
        value (over the paired seeds), then each column's difference."""
        head = ["variant", "of", "seeds", f"Final {metric_title(self.metric)} seen",
                *(f"Δ {t}" for _, t in self.columns)]
        rows = [head]
        for variant, group in self.data.groupby("variant", sort=False):
            first = group.iloc[0]
            final = group[group.column == "final_seen"]
            value = (f"{final['mean'].iloc[0]:.3f}" if len(final)
                     and np.isfinite(final["mean"].iloc[0]) else "–")
            cells = []
            for col, _ in self.columns:
                r = group[group.column == col]
                if r.empty or not np.isfinite(r["delta"].iloc[0]):
                    cells.append("–")
                    continue
                r = r.iloc[0]
                text = f"{r['delta']:+.3f}"
                if np.isfinite(r["ci_low"]):
                    text += f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                cells.append(text + (dagger if r["significant"] else "" if np.isfinite(
                    r["p_value"]) else undefined))
            rows.append([str(variant), str(first["parent"]), str(int(first["n_pairs"])),
                         value, *cells])
        return rows

    def legend(self) -> str:
        """One sentence under the table: what Δ, the CI and † mean here."""
        return ("Δ: the variant minus the strategy it varies (\"of\"), mean of the per-seed "
                "differences over the seeds both ran (same class order and initialisation), "
                "with its 95% Student-t CI; for forgetting a positive Δ means the variant "
                f"forgets more. †: paired t-test, Holm-adjusted p < {self.alpha:g} over the "
                f"{self.family_size} defined test(s) of this table (a family of its own: the "
                "comparison table's tests do not change with the number of ablations); "
                "(n/a): the test is undefined (fewer than 2 paired seeds or no spread in the "
                "differences). Values are over the seeds both ran.")

    def to_markdown(self) -> str:
        """A GitHub Markdown table (see :meth:`legend`)."""
        head, *body = self._rows(" †")
        lines = ["| " + " | ".join(head) + " |",
                 "|---|---|---:|---:|" + "---:|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML table (for report.html)."""
        import html

        return html_table(self._rows(" †"), html.escape)

    def to_latex(self) -> str:
        """A booktabs table (``\\usepackage{booktabs}``), as :meth:`to_markdown`."""
        head, *body = self._rows(r"$^\dagger$")

        def esc(text: str) -> str:
            return latex_escape(text).replace("Δ", r"$\Delta$").replace("–", "--")

        lines = [r"\begin{tabular}{ll" + "r" * (len(head) - 2) + "}", r"\toprule",
                 " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
        lines += [r"\bottomrule", r"\end{tabular}"]
        caption = (f"% {esc(self.scenario)}: ablation variants minus the strategy they vary, "
                   "mean of per-seed differences [95% Student-t CI]; $^\\dagger$ = paired "
                   f"t-test, Holm-adjusted within the table, p < {self.alpha}")
        return caption + "\n" + "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Long form: one row per variant and column (empty = undefined)."""
        out = self.data.assign(scenario=self.scenario)
        cols = ["scenario", "variant", "parent", "column", "title", "mean", "parent_mean",
                "delta", "ci_low", "ci_high", "n_pairs", "p_value", "p_adjusted",
                "significant"]
        return out[cols].to_csv(index=False, float_format="%.12g", lineterminator="\n")


def ablation_tables(results: Results, metric: str = "recall@1", baseline: str | None =
                    "finetune", alpha: float = 0.05, ci: str = "t") -> list[AblationTable]:
    """One :class:`AblationTable` per scenario with ablation variants
    (:func:`variant_parents`): each variant against its parent on the headline columns
    (:data:`ABLATION_COLUMNS` present in the results), paired by seed, Holm within the
    table."""
    parents = variant_parents(results, baseline)
    if not parents:
        return []
    cells = summaries(results, metric)
    m = metric_title(metric)
    tables = []
    for scenario in results.scenarios:
        sc = cells[cells.scenario == scenario]
        rows = []
        for variant in dict.fromkeys(sc.strategy):
            parent = parents.get((scenario, variant))
            if parent is None:
                continue
            for col in ABLATION_COLUMNS:
                v, p = _per_seed(sc, variant, col), _per_seed(sc, parent, col)
                both = pd.concat([v, p], axis=1, join="inner").dropna()
                if not v.notna().any() and not p.notna().any():
                    continue  # e.g. no seen curves in this store, or one experience
                diff = both.iloc[:, 0] - both.iloc[:, 1]
                low, high = mean_ci(diff, ci)
                rows.append({"variant": variant, "parent": parent, "column": col,
                             "title": column_title(col, m), "mean": both.iloc[:, 0].mean(),
                             "parent_mean": both.iloc[:, 1].mean(),  # over the paired seeds
                             "delta": diff.mean() if len(diff) else np.nan,
                             "ci_low": low, "ci_high": high, "n_pairs": len(both),
                             "p_value": paired_p(v, p)})
        if not rows:
            continue
        data = pd.DataFrame(rows)
        data["p_adjusted"] = holm(data["p_value"])
        data["significant"] = np.isfinite(data["p_adjusted"]) & (data["p_adjusted"] < alpha)
        tables.append(AblationTable(scenario, metric, alpha, data))
    return tables
