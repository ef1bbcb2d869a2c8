"""``lrbench report``: tables, plots and one report page from results stores.

Output folder (default ``<first store>/report``)::

    report.md            tables inline, figures linked (PNG), failures, config, versions
    report.html          the same, self-contained: figures embedded, no external file
    tables/<scenario>.{md,csv,tex}   the comparison: mean, std, interval, tests
    pairwise/<scenario>.{md,csv}     every pair of strategies on the primary column
    cells/<scenario>.csv             every per-cell value the tables, figures and claims
                                     are computed from (with each cell's hash and commit)
    ablations/<scenario>.{md,csv,tex}  each ablation variant against the strategy it varies
    cost/<scenario>.csv  seconds per cell and per 100 steps, per strategy (with csv)
    claims.{md,csv}      with --claims
    figures/<kind>_<scenario>_<metric>.{png,svg}

Every file is written atomically, so an interrupted report never leaves half a file.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metrics.errors import LrbenchError, abridged
from metrics.io import atomic_write, check_writable
from reports.provenance import provenance_lines
from reports.render import (
    _CSS,
    COST_FORMATS,
    _ci_name,
    _formatters,
    frame_markdown,
    loss_html,
    statistics_paragraph,
)

if TYPE_CHECKING:  # the heavy imports (pandas, matplotlib) wait until a report is built
    from reports.load import Results
    from reports.tables import Table

FORMATS = ("md", "html", "tex", "csv", "png", "svg")


def parse_formats(spec: str) -> list[str]:
    """``"md,html,png"`` -> a list; unknown formats are a one-line error."""
    formats = [f.strip().lower() for f in spec.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise LrbenchError(f"unknown report format {', '.join(bad) or '(none)'}; use a "
                           f"comma-separated list of {', '.join(FORMATS)}")
    return formats


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out: Path
    tables: list[Table]
    figures: dict[str, list[Path]] = field(default_factory=dict)  # "<kind>/<scenario>": files
    files: list[Path] = field(default_factory=list)
    #: cell folders left out as stale (not cells of their store's matrix)
    stale: list[Path] = field(default_factory=list)
    #: the comparisons of ``--claims`` with their verdicts (:func:`reports.claims.check_claims`)
    claims: object = None
    #: per scenario with ablation variants (:func:`reports.ablations.ablation_tables`)
    ablations: list[Any] = field(default_factory=list)


def build_report(stores: list[str | Path], out: str | Path | None = None,
                 baseline: str | None = "finetune", metric: str = "recall@1",
                 formats: list[str] | None = None, alpha: float = 0.05,
                 split_by: list[str] | None = None, require_baseline: bool = False,
                 claims: str | Path | None = None, ablations: bool = True, ci: str = "t",
                 primary: str = "final_seen", reference: str | None = "pretrained"
                 ) -> Report:
    """Load ``stores``, write tables, figures and the report page into ``out``.

    ``require_baseline``: a ``baseline`` that is not a strategy of the results is a
    one-line error (a mistyped ``--baseline`` would otherwise drop every test silently);
    without it such a baseline means "no test".

    ``split_by``: settings whose values become separate tables (see
    :func:`reports.load.load_results`); without it, unlike cells are refused.

    ``claims``: a claims file (:mod:`reports.claims`) tested against the results, written
    as ``claims.md`` and ``claims.csv``; a claim naming a strategy, scenario or metric the
    results lack is a one-line error before anything is written.

    Ablation variants (a matrix entry whose plugin is another entry of its scenario, see
    :func:`reports.ablations.variant_parents`) are left out of the comparison tables and
    their figures, and compared with the strategy they vary in an ablation table and
    figure of their own (each with its own Holm family), so adding ablations never changes
    the comparison's tests; ``ablations=False`` keeps them in the comparison instead (a
    sweep whose every value should be tested against the baseline).

    ``ci``: the interval shown (``t``, Student's t, the default; ``bootstrap``);
    ``primary``: the column whose pairwise tests form the confirmatory family; ``reference``:
    the untrained strategy of the "Δ vs" column and the figures' reference line."""
    from reports import comparison_plots, compatibility, compatibility_plots, plots
    from reports.ablations import ablation_tables, variant_parents
    from reports.claims import check_claims, claims_csv, claims_markdown, load_claims
    from reports.load import load_results
    from reports.tables import comparison_tables

    formats = formats or ["md", "html", "tex", "csv", "png", "svg"]
    claims_file = load_claims(claims) if claims is not None else None
    results = load_results(stores, split_by)
    if results.cells.empty:
        raise LrbenchError("no finished cell in " + ", ".join(map(str, stores))
                           + "; the report needs at least one (see each cell's log.txt)")
    known = sorted(set(results.cells.strategy))
    if require_baseline and baseline is not None and baseline not in known:
        import difflib

        close = difflib.get_close_matches(baseline, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise LrbenchError(f"--baseline {baseline!r} is not a strategy of these results.{hint} "
                           f"Strategies: {', '.join(known)}")
    metric = metric.lower()
    out = Path(out) if out else Path(stores[0]) / "report"
    checked = check_claims(results, claims_file) if claims_file is not None else None
    main = results.without(set(variant_parents(results, baseline))) if ablations else results
    tables = comparison_tables(main, metric, baseline, alpha, ci, primary, reference)
    abl_tables = ablation_tables(results, metric, baseline, alpha, ci) if ablations else []
    try:  # before anything is written: an unwritable folder is one line, not a traceback
        check_writable(out)
    except OSError as exc:
        raise LrbenchError(f"cannot write the report to {str(out)!r} ({exc.strerror}); fix "
                           "its permissions or choose another --out") from None
    report = Report(out, tables, claims=checked, stale=results.stale, ablations=abl_tables)
    if checked is not None:
        for name, text in (("claims.md", claims_markdown(checked)),
                           ("claims.csv", claims_csv(checked))):
            atomic_write(out / name, text)
            report.files.append(out / name)
    for folder, items in (("tables", tables), ("ablations", abl_tables)):
        for t in items:
            for fmt, text in (("md", t.to_markdown()), ("csv", t.to_csv()),
                              ("tex", t.to_latex())):
                if fmt in formats or (fmt == "md" and "html" in formats):
                    path = out / folder / f"{plots.slug(t.scenario)}.{fmt}"
                    atomic_write(path, text)
                    report.files.append(path)
    for t in tables:  # every pair on the primary column
        for fmt, text in (("md", t.pairwise_markdown()), ("csv", t.pairwise_csv())):
            if fmt in formats or (fmt == "md" and "html" in formats):
                path = out / "pairwise" / f"{plots.slug(t.scenario)}.{fmt}"
                atomic_write(path, text)
                report.files.append(path)
    if "csv" in formats:  # the raw per-cell values behind every number, the ablation
        from reports.tables import cell_values  # variants' included

        for scenario, text in cell_values(results, tables).items():
            path = out / "cells" / f"{plots.slug(scenario)}.csv"
            atomic_write(path, text)
            report.files.append(path)
    if "csv" in formats:  # what each strategy's cells cost, per scenario (own folder: the
        from reports.tables import cost_table  # tables/ CSVs share one tidy schema)

        for sc in results.scenarios:
            cost = cost_table(results, sc, baseline)
            if not cost.empty:
                path = out / "cost" / f"{plots.slug(sc)}.csv"
                atomic_write(path, cost.to_csv(float_format="%.6g"))
                report.files.append(path)
    image_formats = [f for f in ("png", "svg") if f in formats]
    if ("md" in formats or "html" in formats) and "png" not in image_formats:
        image_formats.append("png")  # the page shows PNGs
    fig_dir = out / "figures"
    for sc in main.scenarios:
        report.figures[f"seen_curves/{sc}"] = plots.seen_curves(
            main, sc, metric, fig_dir, image_formats, reference or "")
        report.figures[f"r_matrix/{sc}"] = plots.r_matrix_heatmaps(
            main, sc, metric, fig_dir, image_formats)
        report.figures[f"task_curves/{sc}"] = plots.task_curves(
            main, sc, metric, fig_dir, image_formats)
        report.figures[f"tradeoff/{sc}"] = plots.tradeoff_scatter(
            main, sc, metric, fig_dir, image_formats, reference or "")
        report.figures[f"recall_bars/{sc}"] = plots.recall_bars(main, sc, fig_dir,
                                                               image_formats)
        report.figures.update(compatibility_plots.figures(main, sc, metric, fig_dir,
                                                          image_formats))
        if "csv" in formats:  # every per-cell value behind them (empty: not measured)
            text = compatibility.cells_csv(main, sc)
            if text:
                path = out / "compatibility" / f"{plots.slug(sc)}.csv"
                atomic_write(path, text)
                report.files.append(path)
    for t in tables:
        report.figures[f"critical_difference/{t.scenario}"] = comparison_plots.critical_difference(
            t, fig_dir, image_formats)
    for a in abl_tables:
        report.figures[f"ablations/{a.scenario}"] = comparison_plots.ablation_deltas(
            a, fig_dir, image_formats)
    for paths in report.figures.values():
        report.files += paths
    if "md" in formats:
        atomic_write(out / "report.md", markdown_page(results, report, metric))
        report.files.append(out / "report.md")
    if "html" in formats:
        atomic_write(out / "report.html", html_page(results, report, metric))
        report.files.append(out / "report.html")
    return report


FIGURE_TITLES = {
    "seen_curves": "The headline over the stream: the seen-classes gallery after each "
                   "experience (band: 95% Student-t CI over seeds; dashed: the untrained "
                   "model)",
    "critical_difference": "Mean ranks over seeds on the primary column; a bar joins "
                           "strategies the Nemenyi test cannot tell apart",
    "r_matrix": "R matrix: value on each task (column) after each training experience (row)",
    "task_curves": "Each task across the stream (band: 95% Student-t CI over seeds)",
    "tradeoff": "Final value against forgetting: up and to the left is better (dashed: the "
                "untrained model)",
    "recall_bars": "Final mean Recall@K over all tasks (bars: 95% Student-t CI over seeds)",
    "ablations": "Ablations: each variant minus the strategy it varies, per seed pair "
                 "(bars: 95% Student-t CI of the mean difference; right of 0 = higher)",
}


def _sections(results: Results, report: Report, metric: str) -> list[tuple[str, str, object]]:
    """(kind, heading/text, payload) blocks shared by the Markdown and HTML pages."""
    from reports.plots import slug
    from reports.tables import cost_table, cross_model_table, loss_table, metric_title

    blocks: list[tuple[str, str, object]] = []
    m = metric_title(metric)
    n_cells = len(results.cells)
    # first, see its doc
    blocks.append(("p", statistics_paragraph(report.tables, bool(report.ablations)), None))
    blocks.append(("p", f"{n_cells} finished cells from {len(results.stores)} store(s): "
                   + ", ".join(f"`{s}`" for s in results.stores) + ".", None))
    blocks.append(("p", (
        f"Values are mean ± sample std over seeds ({_ci_name(report)} in the CSV tables; "
        "every per-cell value behind them in `cells/`). "
        f"Each number is named for its gallery. **Seen**: the test images of every class "
        f"learnt so far searched as one gallery, as a deployed retrieval system would; it "
        f"leads, because drift between old and new features only shows there. \"Final {m} "
        f"seen\" is its value after the last experience, \"Avg inc. {m} seen\" its mean "
        f"over the experiences (Rebuffi et al.'s average incremental value). **Per-task**: "
        f"each task's own test images as the gallery; \"per-task\" finals are the mean over "
        f"tasks after the last experience; forgetting, forgetting ratio, BWT and the mean of "
        f"per-task values over the stream (\"Per-task inc.\") are of {m}. \"–\" marks a "
        "value that is undefined (forgetting, ratio and BWT with a single experience). "
        "Definitions: `docs/metrics.md` in the lrbench repository."), None))
    blocks.extend(("p", line, None) for line in provenance_lines(results))
    warned = {f"{sc}/{st}/seed {seed}": w for (sc, st, seed), w in results.warnings.items()
              if w}
    if warned:
        listed = "; ".join(f"{cell}: {w[0]}" for cell, w in list(warned.items())[:5])
        more = f" (and {len(warned) - 5} more cells)" if len(warned) > 5 else ""
        blocks.append(("p", f"**Warnings from the runs** ({len(warned)} cells): "
                       f"{listed}{more}.", None))
    if results.skipped:
        listed = "; ".join(f"{len(v)} of {name} ({abridged([f'`{f}`' for f in v])})"
                           for name, v in results.skipped.items())
        blocks.append(("p", f"**Images left out** by `lrbench run --skip-corrupt`, as they "
                       f"cannot be decoded: {listed}. The cells that read them list them "
                       "in their config (`skip_files`).", None))
    if len(results.failed):
        blocks.append(("h2", "Failed cells (not averaged in)", None))
        blocks.append(("failed", "", results.failed))
    for t in report.tables:
        blocks.append(("h2", t.scenario, None))
        blocks.append(("table", "", t))
        blocks.append(("p", t.legend(), None))
        if not t.pairwise.empty:
            distinct = t.pairwise[t.pairwise.distinct]
            blocks.append(("p", f"**Which pairs differ** on the primary column "
                           f"({len(distinct)} of {len(t.pairwise)} pairs after Holm over "
                           f"{t.family_size} defined tests; the confirmatory family): "
                           + (", ".join(f"{r.a} {'>' if r.diff > 0 else '<'} {r.b}"
                                        for r in distinct.itertuples()) or "none")
                           + ". Every pair with its difference and interval: "
                           f"`pairwise/{slug(t.scenario)}.csv`.", None))
            blocks.append(("pairwise", "", t))
        losses = loss_table(results, t.scenario)
        if not losses.empty:
            blocks.append(("p", "Loss terms per experience (mean over seeds and steps): the "
                           "metric loss, each term a strategy adds (its regulariser's size, "
                           "to compare with the metric loss), their total, and the steps "
                           "taken.", None))
            blocks.append(("losses", "", losses))
        cost = cost_table(results, t.scenario, t.baseline)
        if not cost.empty:
            blocks.append(("p", "Compute per cell: the seconds a cell's worker measured from "
                           "building it to its last evaluation (training, evaluations, "
                           "per-seed cache parts; not the shared cache fill before the workers "
                           f"start), and the median relative to {cost.columns[4][2:]}'s. "
                           "A cell resumed from a checkpoint (its own, or a first experience "
                           "shared with cells that differ only in hyperparameters inactive "
                           "there) timed only what it trained: it counts in the seconds per "
                           "100 steps, not in `cells` and the per-cell seconds. A cell that "
                           "loaded the training loops of a cell that trains alike (a drift "
                           "compensation beside the strategy it wraps) counts their seconds as "
                           "measured where they ran: its row is what running it alone costs. "
                           "Times depend on the machine and its load: compare the rows of one "
                           "run, not across runs.", None))
            blocks.append(("cost", "", cost))
        cross = cross_model_table(results, t.scenario, metric)
        if not cross.empty:
            blocks.append(("p", f"Cross-model (backfill-free) {m}: the final model's queries "
                           "against the seen gallery as embedded by the model after an "
                           "earlier experience (is the index usable without re-embedding "
                           "it?), beside `rebuilt` (re-embedded by the final model). Mean "
                           "over seeds.", None))
            blocks.append(("cross", "", cross))
        # the never-re-indexed gallery and compatibility (reports.compatibility)
        from reports.compatibility import FIGURE_TITLES as GALLERY_TITLES
        from reports.compatibility import page_blocks

        blocks += page_blocks(results, t.scenario, metric, t.strategies)
        for kind, title in {**FIGURE_TITLES, **GALLERY_TITLES}.items():
            paths = [p for p in report.figures.get(f"{kind}/{t.scenario}", [])
                     if p.suffix == ".png"]
            if paths and kind != "ablations":
                blocks.append(("figure", title, paths[0]))
        ablation = next((a for a in report.ablations if a.scenario == t.scenario), None)
        if ablation is not None:
            blocks.append(("p", f"**Ablations** ({t.scenario}): each variant against the "
                           "strategy it varies, on the same seeds; the variants are left "
                           "out of the comparison table and figures above (their loss "
                           "terms and costs are in the tables above).", None))
            blocks.append(("table", "", ablation))
            blocks.append(("p", ablation.legend(), None))
            paths = [p for p in report.figures.get(f"ablations/{t.scenario}", [])
                     if p.suffix == ".png"]
            if paths:
                blocks.append(("figure", FIGURE_TITLES["ablations"], paths[0]))
    if results.weights:
        blocks.append(("h2", "Pretrained weights", None))
        blocks.append(("code", "", "\n".join(
            f"{name}: {file} sha256 {digest}"
            for name, (file, digest) in sorted(results.weights.items()))))
    blocks.append(("h2", "Matrix configuration", None))
    for store, text in results.configs.items():
        blocks.append(("code", f"{store}/matrix.yaml", text))
    if results.versions:
        blocks.append(("h2", "Versions", None))
        blocks.append(("code", "", "\n".join(f"{k}: {v}" for k, v in results.versions.items())))
    return blocks


def markdown_page(results: Results, report: Report, metric: str) -> str:
    """``report.md``: tables inline, figures as relative PNG links."""
    from reports.tables import loss_markdown, metric_title

    lines = [f"# lrbench report ({metric_title(metric)})", ""]
    for kind, text, payload in _sections(results, report, metric):
        if kind == "p":
            lines += [text, ""]
        elif kind == "h2":
            lines += [f"## {text}", ""]
        elif kind == "failed":
            lines += ["| cell | status | reason |", "|---|---|---|"]
            lines += [f"| {r.cell} | {r.status} | {str(r.reason).replace('|', '/')} |"
                      for r in payload.itertuples()]
            lines.append("")
        elif kind == "table":
            lines += [payload.to_markdown()]
        elif kind == "pairwise":
            lines += [payload.pairwise_markdown()]
        elif kind == "losses":
            lines += [loss_markdown(payload)]
        elif kind == "cost":
            lines += [frame_markdown(payload, COST_FORMATS)]
        elif kind == "cross":
            lines += [frame_markdown(payload)]
        elif kind == "figure":
            rel = os.path.relpath(payload, report.out)
            lines += [f"![{text}]({rel})", "", f"*{text}*", ""]
        elif kind == "code":
            lines += ([f"`{text}`", ""] if text else []) + ["```yaml", payload.rstrip(), "```", ""]
    return "\n".join(lines)


def html_page(results: Results, report: Report, metric: str) -> str:
    """``report.html``: self-contained (figures embedded as base64 PNG, inline CSS)."""
    from reports.tables import metric_title

    body = [f"<h1>lrbench report ({html.escape(metric_title(metric))})</h1>"]
    for kind, text, payload in _sections(results, report, metric):
        if kind == "p":
            t = html.escape(text)
            while "**" in t:
                t = t.replace("**", "<b>", 1).replace("**", "</b>", 1)
            while t.count("`") >= 2:
                t = t.replace("`", "<code>", 1).replace("`", "</code>", 1)
            body.append(f"<p>{t}</p>")
        elif kind == "h2":
            body.append(f"<h2>{html.escape(text)}</h2>")
        elif kind == "failed":
            body.append("<table class='failed'><thead><tr><th>cell</th><th>status</th>"
                        "<th>reason</th></tr></thead><tbody>")
            body += [f"<tr><td>{html.escape(r.cell)}</td><td>{html.escape(r.status)}</td>"
                     f"<td>{html.escape(str(r.reason))}</td></tr>"
                     for r in payload.itertuples()]
            body.append("</tbody></table>")
        elif kind == "table":
            body.append(payload.to_html())
        elif kind == "pairwise":
            from reports.tables import html_table

            body.append(html_table(payload.pairwise_rows(), lambda c: html.escape(c).replace(
                "**yes**", "<b>yes</b>")))
        elif kind == "losses":
            body.append(loss_html(payload))
        elif kind == "cross":
            body.append(payload.to_html(float_format="{:.3f}".format, na_rep="–"))
        elif kind == "cost":
            body.append(payload.to_html(formatters=_formatters(payload, COST_FORMATS),
                                        na_rep="–"))
        elif kind == "figure":
            data = base64.b64encode(Path(payload).read_bytes()).decode()
            body.append(f"<figure><img alt='{html.escape(text)}' "
                        f"src='data:image/png;base64,{data}'>"
                        f"<figcaption>{html.escape(text)}</figcaption></figure>")
        elif kind == "code":
            if text:
                body.append(f"<p><code>{html.escape(text)}</code></p>")
            body.append(f"<pre>{html.escape(str(payload))}</pre>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>lrbench report</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
