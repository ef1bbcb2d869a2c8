"""``lrbench report``: tables, figures and a report page from results stores."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """``lrbench report``'s arguments, added to the subcommands ``sub``."""
    p = sub.add_parser("report", help="tables, plots and a report page from results stores",
                       description="Read one or more results stores (merged) and write "
                       "comparison tables (Markdown, CSV, LaTeX), figures (PNG, SVG) and "
                       "report.md / report.html into --out. Failed cells are listed, never "
                       "averaged in.")
    p.add_argument("stores", nargs="+", metavar="RESULTS_DIR", help="results store(s)")
    p.add_argument("--out", help="report folder (default: RESULTS_DIR/report of the first)")
    p.add_argument("--baseline", default=None,
                   help="strategy the paired t-test compares against (default: finetune, "
                   "when the results have it; a name given here must be in the results)")
    p.add_argument("--metric", default="recall@1",
                   help="metric of forgetting, BWT, heatmaps and curves: recall@K or "
                   "map_at_r (default: recall@1)")
    p.add_argument("--format", default="md,html,tex,csv,png,svg",
                   help="comma-separated outputs among md, html, tex, csv, png, svg "
                   "(default: all)")
    p.add_argument("--claims", metavar="FILE",
                   help="a claims file (YAML, format in docs/metrics.md): test each claim "
                   "against the results (one paired test over seeds per comparison, "
                   "one-sided for a direction, Holm within each family, t intervals), print "
                   "supported / not supported / inconclusive with the numbers, and write "
                   "claims.md and claims.csv into the report folder")
    p.add_argument("--ci", choices=["t", "bootstrap"], default="t",
                   help="the 95%% interval of every mean and mean difference: Student's t "
                   "(default), or a percentile bootstrap (too narrow with few seeds)")
    p.add_argument("--primary", default="final_seen",
                   choices=["final_seen", "avg_incremental_seen", "forgetting", "last_task",
                            "avg_incremental", "bwt", "forgetting_ratio"],
                   help="the column whose pairwise tests (every pair of strategies) form the "
                   "confirmatory Holm family (default: final_seen); the others are secondary")
    p.add_argument("--reference", default="pretrained",
                   help="the untrained strategy of the 'Δ vs' column and the figures' "
                   "reference line, when the results have it (default: pretrained)")
    p.add_argument("--split-by", default="", metavar="SETTING[,SETTING]",
                   help="one table per value of these cell settings (e.g. training.iterations) "
                   "instead of refusing stores whose cells differ in them")
    p.add_argument("--no-ablations", action="store_true",
                   help="keep ablation variants (an entry whose strategy: is another entry, "
                   "e.g. a sweep) in the comparison table and its figures, tested like every "
                   "strategy, instead of comparing each with the strategy it varies in "
                   "ablations/")



def command(args: argparse.Namespace) -> int:
    from reports.page import build_report, parse_formats

    formats = parse_formats(args.format)
    report = build_report(args.stores, args.out, baseline=args.baseline or "finetune",
                          require_baseline=args.baseline is not None, metric=args.metric,
                          formats=formats,
                          split_by=[k.strip() for k in args.split_by.split(",") if k.strip()],
                          claims=args.claims, ablations=not args.no_ablations,
                          ci=args.ci, primary=args.primary, reference=args.reference)
    from benchmarks.run.store import stale_lines

    for line in stale_lines(report.stale):
        print(line, file=sys.stderr)
    if report.claims is not None:
        from reports.claims import comparison_line

        checked: Any = report.claims
        for name, verdict in checked.attrs["verdicts"].items():
            print(f"{verdict.upper():<14} {name}")
            for _, row in checked[checked.claim == name].iterrows():
                print(f"{'':<14}   {comparison_line(row)}")
    pages = [p for p in report.files if p.name in ("report.md", "report.html")]
    variants = sum(len(set(a.data.variant)) for a in report.ablations)
    print(f"{report.out}: {len(report.tables)} table(s), "
          + (f"{variants} ablation variant(s) in ablations/, " if variants else "")
          + f"{sum(len(v) for v in report.figures.values())} figure file(s)"
          + (f"; open {pages[-1]}" if pages else ""))
    if len(args.stores) == 1:  # one store whose matrix tracks to MLflow: attach the report
        from pathlib import Path

        from benchmarks.run.tracking import attach_report

        if attach_report(Path(args.stores[0]), Path(report.out)):
            print(f"{report.out}: logged to the store's MLflow parent run as report/")
    return 0
