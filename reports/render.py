"""The report's prose and table formats: the paragraph saying what the tests can and cannot show
with the seeds at hand, and the Markdown and HTML forms of its tables."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy imports (pandas, matplotlib) wait until a report is built
    from reports.page import Report
    from reports.tables import Table


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #444}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto}
figcaption{font-style:italic;color:#555}pre{background:#f6f6f6;padding:.8em;overflow:auto}
.failed td{color:#a00}"""

#: number formats of the cost table's columns (:func:`reports.tables.cost_table`); the
#: ratio column, named after its reference strategy, takes the default
COST_FORMATS = {"cells": "{:.0f}", "median s": "{:.1f}", "min s": "{:.1f}", "max s": "{:.1f}",
                "s per 100 steps": "{:.2f}"}


def _formatters(frame: object, formats: dict[str, str] | None) -> list[Any]:
    """One formatter per column: ``formats[column]`` or 3 decimals; "–" for NaN."""
    def one(fmt: str) -> Any:
        return lambda v: "–" if v != v else fmt.format(v)  # NaN: undefined
    return [one((formats or {}).get(str(c), "{:.3f}")) for c in frame.columns]


def frame_markdown(frame: object, formats: dict[str, str] | None = None) -> str:
    """A small numeric table (index = strategy) as Markdown: each column in its
    ``formats`` entry, else 3 decimals; "–" for NaN."""
    head = [str(frame.index.name or ""), *map(str, frame.columns)]
    fmts = _formatters(frame, formats)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(frame.columns)]
    for name, row in frame.iterrows():
        lines.append(f"| {name} | " + " | ".join(f(v) for f, v in zip(fmts, row, strict=True))
                     + " |")
    return "\n".join(lines) + "\n"


def loss_html(table: object) -> str:
    """The loss-terms table (:func:`reports.tables.loss_table`) as HTML."""
    from reports.tables import loss_cells

    head, rows = loss_cells(table)
    out = ["<table class='losses'><thead><tr>"
           + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
    return "".join(out) + "</tbody></table>"


def _ci_name(report: Report) -> str:
    from metrics.statistics import describe_ci

    return describe_ci(report.tables[0].ci_method if report.tables else "t")


def statistics_paragraph(tables: list[Table], ablations: bool = False) -> str:
    """The report's first paragraph: which tests were run, and what they can and cannot
    show with the number of seeds these results have (numbers computed, not assumed);
    with ``ablations``, that the ablation tables are families of their own."""
    from reports.tables import power_note

    if not tables:
        return "No table: nothing to test."
    alpha = tables[0].alpha
    bases = sorted({t.baseline for t in tables if t.baseline})
    primaries = sorted({t.primary for t in tables})
    text = ("**Statistics.** Two families per table. The **confirmatory** family is every "
            f"pair of strategies on the primary column ({', '.join(primaries)}), each a "
            "two-sided paired t-test over seeds (runs with the same seed paired), "
            f"Holm-Bonferroni adjusted over the pairs; adjusted p < {alpha:g} is a finding. "
            "The other columns form a **secondary** family (each strategy against the "
            "baseline and against the column's best, Holm on their own): descriptive "
            "support, not a finding on its own. Bold marks the best mean of a column and "
            "every strategy not distinguishable from it within the column's family. ")
    if bases:
        text += (f"† marks a difference from {', '.join(f'`{b}`' for b in bases)} within the "
                 "column's family (raw and adjusted p-values in the CSV tables). ")
    text += ("A test is undefined, marked (n/a) and left out of its family, with fewer than "
             "2 paired seeds or when the per-seed differences do not vary. A Friedman test "
             "over the seeds with the Nemenyi post-hoc test (Demšar 2006) draws the "
             "critical-difference diagram. ")
    pairs = sorted({n for t in tables for n in t.paired_seeds}) or sorted(
        {int(t.data["n"].max()) for t in tables})
    m = max(t.family_size for t in tables)
    return text + " ".join(power_note(n, alpha, m) for n in pairs) + (
        " Ablation variants are compared with the strategy they vary in tables of their own, "
        "each its own Holm family (below each comparison)." if ablations else "")
