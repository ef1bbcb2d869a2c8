"""``lrbench tune``: every strategy's declared hyperparameters searched on validation data."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks.commands.common import (
    at_least,
    positive_float,
    seed_list,
    seed_value,
)
from benchmarks.errors import abridged


def add_parser(sub: Any) -> None:
    """``lrbench tune``'s arguments, added to the subcommands ``sub``."""
    from benchmarks.tune_search import OBJECTIVES  # no Optuna: imported where it searches

    p = sub.add_parser("tune", help="tune every strategy's declared hyperparameters on "
                       "validation data", description="Search each strategy's declared "
                       "tunable hyperparameters (those its matrix entry does not set) with the "
                       "same number of trials for every strategy (Optuna TPE, seeded; trial 0 "
                       "= the matrix's values), on each scenario's validation split (held-out "
                       "train images, never the test split). Trials run as variants "
                       "<strategy>-tNNN into a tuning store and are reused by config hash, so "
                       "a rerun resumes. Writes tuning.csv/.md (every trial) and tuned.yaml "
                       "(the matrix with the chosen values, validation removed) into the store. "
                       "Needs pip install 'lrbench[tune]'.")
    p.add_argument("config", help="matrix file (YAML) whose strategies are tuned")
    p.add_argument("--trials", type=int, default=20,
                   help="trials per strategy with something to tune (default: 20): trial 0 "
                   "the matrix's values, then a scrambled Sobol start over the declared "
                   "ranges (about half), then TPE")
    p.add_argument("--out", help="tuning store (default: results/<matrix name>-tune)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed from which each strategy's "
                   "sampler seed is derived with its label (default: 0)")
    p.add_argument("--also-tune", dest="also", action="append", default=[], metavar="OPTION",
                   help="also search this training option for every strategy that trains "
                   "(trunk_lr_mult: log-uniform [0.01, 1]; lr: log-uniform [1e-5, 1e-2]); "
                   "the choice goes into each strategy's training: override")
    p.add_argument("--extend-edges", dest="extend", type=positive_float, metavar="FACTOR",
                   help="when a strategy's best value is the smallest or largest it tried, "
                   "try it moved outward (a log range's value times or divided by FACTOR, "
                   "a linear one's by FACTOR - 1 declared widths), up to --extend-rounds "
                   "times, so the search ends with its optimum bracketed or a warning")
    p.add_argument("--extend-rounds", type=at_least(0), default=3,
                   help="extension trials per strategy at most (default: 3)")
    p.add_argument("--test-seeds", type=seed_list, metavar="S,S,...",
                   help="seeds tuned.yaml gets for the test run (must differ from the "
                   "tuning matrix's seeds; default: the tuning's, which lrbench run refuses)")
    p.add_argument("--objective", default="final_seen",
                   choices=list(OBJECTIVES),
                   help="what is optimised, on validation, mean over seeds and scenarios: the "
                   "final union-of-seen value (default), its mean over the stream, the final "
                   "per-task mean, forgetting (minimised) or the final never-re-indexed "
                   "value; a strategy may declare its own (drift compensation: final_nri, "
                   "and --also-tune leaves it alone)")
    p.add_argument("--metric", default="recall@1",
                   help="metric of the objective: recall@K or map_at_r (default: recall@1)")
    p.add_argument("--validation", type=float, default=None, metavar="FRACTION",
                   help="hold out this fraction of each class's train images in scenarios "
                   "without a validation split (default: refuse such scenarios)")
    p.add_argument("--jobs", type=at_least(1), default=1,
                   help="cells run in parallel processes")
    p.add_argument("--no-shared-first", dest="share_first", action="store_false",
                   help="train every trial's first experience itself (by default, later "
                   "trials resume from trial 0's where the searched hyperparameters are "
                   "inactive in it, a drift compensation's trials share every "
                   "experience's training loop, and strategies whose first loop is "
                   "finetune's share that one: the same numbers, less time)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.iterations=20")



def command(args: argparse.Namespace) -> int:
    """``lrbench tune``: see :mod:`benchmarks.tune`."""
    from benchmarks.tune import tune

    result = tune(args.config, args.trials, out=args.out, seed=args.seed,
                  objective=args.objective, metric=args.metric, validation=args.validation,
                  jobs=args.jobs, overrides=args.overrides, progress=sys.stderr.isatty(),
                  share_first=args.share_first, also=args.also, extend=args.extend,
                  extend_rounds=args.extend_rounds, test_seeds=args.test_seeds)
    for edge in result.edges:
        if edge.side is not None:
            print(f"lrbench: warning: {edge.line()}", file=sys.stderr)
    failed = [t.label for t in result.trials if t.status != "finished"]
    for label, params in result.chosen.items():
        best = next(t for t in result.trials if t.strategy == label and t.chosen)
        values = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "nothing to tune"
        print(f"{label:<12} {best.label}: {result.objectives.get(label, args.objective)} "
              f"{best.mean:.4f} "
              f"({values})")
    print(f"{result.store}: {len(result.trials)} trial(s), {result.trained} cell(s) trained "
          f"now; every trial in {result.files[1]}, the test matrix in {result.files[2]}")
    if failed:  # a cell that did not finish is never a success, whatever the cause
        print(f"lrbench: {len(failed)} trial(s) failed ({abridged(failed, 3)}): their reasons "
              f"are in {result.store}/cells/*/result.json and log.txt; the choice is among "
              "the others", file=sys.stderr)
        return 1
    return 0
