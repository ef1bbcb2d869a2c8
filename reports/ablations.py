"""Ablation variants (a matrix entry whose strategy: is another entry) compared with the strategy
they vary: paired per-seed differences, intervals and Holm-adjusted tests within the ablation
table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metrics.statistics import (  # noqa: F401 (re-exported)
    CI_SEED,
    N_RESAMPLES,
    bootstrap_ci,
    describe_ci,
    mean_ci,
    t_interval,
)
from reports.load import Results, summaries
from reports.stats import _per_seed, holm, paired_p
from reports.tables import _LongForm, column_title, html_table, latex_escape, metric_title

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
