"""The ``lrbench`` command line (also ``python -m benchmarks``).

Every user error ends as one line on stderr and exit code 2, never a traceback; results go
to stdout, as JSON with ``--json`` for scripts and checks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.errors import LrbenchError, abridged

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (problem + where to look), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _quiet_third_party() -> None:
    # Avalanche imports qpsolvers, which warns on stderr that no QP solver is installed
    # (only GEM needs one); keep stderr for our own messages.
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=os.environ.get("LRBENCH_DATA"),
                   help="dataset root, or a folder holding several datasets "
                        "(default: $LRBENCH_DATA)")


def _at_least(low: int) -> Any:
    """An argparse type: an integer >= ``low`` (a bad value is argparse's one-line error,
    naming the flag)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"give an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"give an integer >= {low}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"give a number > 0, got {text!r}")
    return value


def _seed_list(text: str) -> list[int]:
    """An argparse type: comma-separated seeds, each in 0..2**32 - 1."""
    from benchmarks.config import SEED_MAX

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give seeds as S,S,..., got {text!r}") from None
    if not seeds or any(not 0 <= s <= SEED_MAX for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give distinct seeds in 0..{SEED_MAX}, got {text!r}")
    return seeds


def _seed_value(text: str) -> int:
    """An argparse type: one seed in 0..2**32 - 1 (NumPy's seed range)."""
    from benchmarks.config import SEED_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give an integer, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"give a seed in 0..{SEED_MAX}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for docs and tests)."""
    parser = _Parser(prog="lrbench", description=(
        "Benchmark suite for continual (incremental and lifelong) fine-grained image "
        "retrieval: list what is registered, inspect data and streams, run a benchmark "
        "matrix, report on its results."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list registered datasets, protocols or strategies")
    p.add_argument("what", choices=["datasets", "protocols", "strategies"])
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("data", help="inspect and check a dataset on disk")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    for name, helptext in (
        ("info", "classes, images and per-split counts (no image is decoded)"),
        ("check", "decode every image and list broken files (exit 2 if any)"),
    ):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("dataset", help="dataset name, e.g. cub200 or synth-fg:glyphs")
        _root_arg(q)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "info":
            q.add_argument("--download", action="store_true",
                           help="fetch the official files first where possible (checksummed)")

    p = sub.add_parser("run", help="run a benchmark matrix into a results store",
                       description="Run every (scenario, strategy, seed) cell of a matrix "
                       "file; finished cells with the same config hash are skipped. Exit "
                       "code 0 when every cell finished, 1 when some failed (recorded in the "
                       "store), 2 for bad input.")
    p.add_argument("config", help="matrix file (YAML), e.g. configs/demo.yaml")
    p.add_argument("--out", help="results store (default: results/<matrix name>)")
    p.add_argument("--jobs", type=_at_least(1), default=1,
                   help="cells run in parallel processes")
    from benchmarks.run.executors import EXECUTORS  # light: the training stack loads lazily

    p.add_argument("--executor", choices=list(EXECUTORS), default="local",
                   help="local processes, one Ray task per cell (pip install lrbench[ray]), "
                   "or one SLURM job per cell through submitit (pip install lrbench[slurm])")
    p.add_argument("--ray-address", help="address of a running Ray cluster (default: start "
                   "a local one)")
    g = p.add_argument_group("SLURM (--executor submitit; each overrides the matrix file's "
                             "slurm: section)")
    g.add_argument("--slurm-partition", metavar="NAME", help="partition of every cell's job")
    g.add_argument("--slurm-time", metavar="MIN", type=_at_least(1),
                   help="wall-clock limit of one cell's job in minutes (default 60)")
    g.add_argument("--slurm-cpus", metavar="N", type=_at_least(1),
                   help="CPUs per cell's job (default: training.threads)")
    g.add_argument("--slurm-gpus", metavar="N", type=_at_least(0),
                   help="GPUs per cell's job (default: 1 for CUDA cells, else 0)")
    g.add_argument("--slurm-mem", metavar="GB", type=_positive_float,
                   help="memory per cell's job")
    g.add_argument("--slurm-cluster", choices=["slurm", "local"],
                   help="'local' runs the jobs as local processes through submitit's local "
                   "executor (same code path, no cluster)")
    g.add_argument("--slurm-folder", metavar="DIR",
                   help="submitit's pickles and job logs (default STORE/submitit; on a "
                   "cluster a disk the nodes share)")
    g = p.add_argument_group("MLflow and W&B tracking (each overrides the matrix file's "
                             "tracking: section)")
    g.add_argument("--track", action="store_true",
                   help="log one MLflow parent run for the matrix and a child run per cell "
                   "(pip install lrbench[mlflow])")
    g.add_argument("--tracking-uri", metavar="URI",
                   help="where MLflow runs go (implies --track): a folder (default mlruns, "
                   "a SQLite database inside), sqlite:///PATH or http(s)://SERVER")
    g.add_argument("--experiment", metavar="NAME",
                   help="MLflow experiment (default: the matrix name)")
    g.add_argument("--wandb", action="store_true",
                   help="also log each cell as a Weights & Biases run, grouped by the store "
                   "(tracking.wandb; pip install lrbench[wandb]; WANDB_MODE=offline writes "
                   "them locally for 'wandb sync')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.iterations=20")
    p.add_argument("--dry-run", action="store_true",
                   help="list each cell with its config hash and whether it is done or "
                        "would run, and say whether the run would be refused (exit 2, with "
                        "the reason); trains and writes nothing")
    p.add_argument("--resume", action="store_true",
                   help="reuse a store written by a different matrix (matching cells kept; "
                   "a finished result a changed cell replaces is kept as "
                   "result.json.replaced)")
    p.add_argument("--force", action="store_true", help="recompute every cell (not with "
                   "--resume)")
    p.add_argument("--rerun-before", metavar="COMMIT",
                   help="recompute finished cells computed by an lrbench commit older than "
                   "COMMIT (an ancestor of it in this repository's history, or unknown): "
                   "numbers from one code version")
    p.add_argument("--checkpoints", action="store_true",
                   help="keep a checkpoint per cell after each experience (resumable cells)")
    p.add_argument("--no-shared-first", dest="share_first", action="store_false",
                   help="train every cell's first experience itself (by default, cells that "
                   "differ only in hyperparameters their strategy declares inactive there "
                   "train it once and share it: the same numbers, less time)")
    p.add_argument("--allow-tuning-seeds", action="store_true",
                   help="run even where the matrix's seeds reuse a seed that tuned its "
                   "hyperparameters (tuned_on_seeds, written by lrbench tune); by default "
                   "refused, as test numbers on tuning seeds are optimistic")
    p.add_argument("--check-determinism", action="store_true",
                   help="run the first cell twice here and compare every metric value "
                   "(exit 0 when identical, 1 otherwise); the store is not touched")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out images that cannot be decoded instead of refusing the "
                   "matrix (every image is decoded once before training; the files left out "
                   "are recorded in each cell's config and in skipped.json)")

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
    p.add_argument("--seed", type=_seed_value, default=0, help="seed from which each strategy's "
                   "sampler seed is derived with its label (default: 0)")
    p.add_argument("--also-tune", dest="also", action="append", default=[], metavar="OPTION",
                   help="also search this training option for every strategy that trains "
                   "(trunk_lr_mult: log-uniform [0.01, 1]; lr: log-uniform [1e-5, 1e-2]); "
                   "the choice goes into each strategy's training: override")
    p.add_argument("--extend-edges", dest="extend", type=_positive_float, metavar="FACTOR",
                   help="when a strategy's best value is the smallest or largest it tried, "
                   "try it moved outward (a log range's value times or divided by FACTOR, "
                   "a linear one's by FACTOR - 1 declared widths), up to --extend-rounds "
                   "times, so the search ends with its optimum bracketed or a warning")
    p.add_argument("--extend-rounds", type=_at_least(0), default=3,
                   help="extension trials per strategy at most (default: 3)")
    p.add_argument("--test-seeds", type=_seed_list, metavar="S,S,...",
                   help="seeds tuned.yaml gets for the test run (must differ from the "
                   "tuning matrix's seeds; default: the tuning's, which lrbench run refuses)")
    p.add_argument("--objective", default="final_seen",
                   choices=["final_seen", "avg_incremental_seen", "final_mean", "forgetting"],
                   help="what is optimised, on validation, mean over seeds and scenarios: the "
                   "final union-of-seen value (default), its mean over the stream, the final "
                   "per-task mean, or forgetting (minimised)")
    p.add_argument("--metric", default="recall@1",
                   help="metric of the objective: recall@K or map_at_r (default: recall@1)")
    p.add_argument("--validation", type=float, default=None, metavar="FRACTION",
                   help="hold out this fraction of each class's train images in scenarios "
                   "without a validation split (default: refuse such scenarios)")
    p.add_argument("--jobs", type=_at_least(1), default=1,
                   help="cells run in parallel processes")
    p.add_argument("--no-shared-first", dest="share_first", action="store_false",
                   help="train every trial's first experience itself (by default, later "
                   "trials resume from trial 0's where the searched hyperparameters are "
                   "inactive in it: the same numbers, less time)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.iterations=20")

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

    p = sub.add_parser("stream", help="show the experiences of a stream", description=(
        "Give a PROTOCOL name, or --dataset/--schedule for a class-incremental stream, or "
        "--lifelong A,B,C for a cross-dataset one."))
    p.add_argument("protocol", nargs="?", help="a named protocol (see 'lrbench list protocols')")
    p.add_argument("--dataset", help="dataset of a class-incremental stream")
    p.add_argument("--schedule", help="class counts per experience, e.g. 50+5x10 or 100+100")
    p.add_argument("--order", default="sorted",
                   help="class order: 'sorted' (by class id) or an integer seed")
    p.add_argument("--lifelong", help="comma-separated datasets, one experience each")
    _root_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("check", help="run the contract kit on a strategy (no pytest needed)",
                       description="Train the strategy on a tiny synth-fg stream (3 "
                       "experiences, small CNN, seconds on a CPU) and check finite losses, an "
                       "active regulariser, a full R matrix, determinism under a seed and "
                       "identical numbers after checkpoint + resume (benchmarks.contract). "
                       "Exit code 0 when every check passes, 1 when one fails (the reason in "
                       "one line), 2 for an unknown strategy or a bad hyperparameter.")
    p.add_argument("strategy", help="a registered strategy (see 'lrbench list strategies')")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyperparameter of the strategy (repeatable); VALUE is read as "
                   "JSON when it parses, e.g. --hparam lam=2.5 --hparam n_synth=16")
    p.add_argument("--trunk", default="small_cnn",
                   help="the model's trunk, as model.trunk in a matrix (e.g. timm:resnet18, "
                   "randomly initialised); default small_cnn")
    p.add_argument("--device", default="cpu",
                   help="where the kit trains, as training.device (cpu, cuda, cuda:N, mps); "
                   "default cpu")
    return parser


# -- commands ---------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "datasets":
        from benchmarks.datasets import DATASETS, SUMMARIES

        rows = [{"name": n, "summary": SUMMARIES[n],
                 "layout": getattr(DATASETS[n], "layout", "") or "(generated)"}
                for n in DATASETS]
    elif args.what == "strategies":
        from strategies import available_strategies

        rows = [spec.describe() for spec in available_strategies().values()]
        if not args.json:
            for r in rows:
                hp = ", ".join(f"{h['name']}={h['default']!r}" for h in r["hyperparameters"])
                print(f"{r['name']:<10}  {r['summary']}")
                if hp:
                    print(f"{'':<10}  hyperparameters: {hp}")
                if r["tunable"]:
                    print(f"{'':<10}  tunable: " + ", ".join(
                        f"{k} {v}" for k, v in r["tunable"].items()))
            return 0
    else:
        from benchmarks.protocols import PROTOCOLS

        rows = [{"name": p.name, "kind": p.kind, "datasets": list(p.datasets),
                 "schedule": p.schedule, "image_size": p.image_size,
                 "summary": p.description} for p in PROTOCOLS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['summary']}")
    return 0


def _dataset_info(name: str, root: Any, download: bool) -> dict[str, Any]:
    from benchmarks.datasets import get_dataset
    from benchmarks.streams import jsonable

    ds = get_dataset(name, root, "all", download=download)
    per_class = Counter(ds.targets)
    counts = [per_class.get(i, 0) for i in range(ds.num_classes)]
    return {
        "dataset": ds.name, "root": None if ds.root is None else str(ds.root),
        "classes": ds.num_classes, "images": len(ds), "splits": dict(ds.split_counts),
        "images_per_class": {"min": min(counts), "median": statistics.median(counts),
                             "max": max(counts)},
        "class_ids": {"first": jsonable(ds.class_ids[0]), "last": jsonable(ds.class_ids[-1])},
    }


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "info":
        info = _dataset_info(args.dataset, args.root, args.download)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            splits = ", ".join(f"{k} {v:,}" for k, v in info["splits"].items())
            ipc = info["images_per_class"]
            print(f"{info['dataset']} at {info['root']}: {info['classes']} classes, "
                  f"{info['images']:,} images ({splits}); images per class "
                  f"{ipc['min']}..{ipc['max']} (median {ipc['median']})")
        return 0
    from benchmarks.datasets import check_images, get_dataset

    ds = get_dataset(args.dataset, args.root, "all")
    if ds.name == "synth-fg":
        bad: list[tuple[str, str]] = []
    else:
        bad = check_images(ds, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps({"dataset": ds.name, "checked": len(ds),
                          "broken": [{"path": p, "reason": r} for p, r in bad]}, indent=2))
    if bad:
        shown = abridged([p for p, _ in bad], 5, "; ")
        raise LrbenchError(f"{len(bad)} of {len(ds)} images of {ds.name} cannot be decoded: "
                           f"{shown}. Replace or remove these files, or let 'lrbench run "
                           "--skip-corrupt' leave them out")
    if not args.json:
        print(f"{ds.name}: all {len(ds):,} images decode")
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from benchmarks.protocols import get_protocol
    from benchmarks.streams import class_incremental, lifelong

    given = [x for x in (args.protocol, args.dataset, args.lifelong) if x]
    if len(given) != 1:
        raise LrbenchError("give exactly one of PROTOCOL, --dataset (with --schedule) or "
                           "--lifelong A,B,C")
    if args.protocol:
        bench = get_protocol(args.protocol).build(args.root)
    elif args.dataset:
        if not args.schedule:
            raise LrbenchError("--dataset needs --schedule, e.g. --schedule 50+5x10")
        order: Any = int(args.order) if args.order.lstrip("-").isdigit() else args.order
        bench = class_incremental(args.dataset, args.schedule, root=args.root, order=order)
    else:
        names = [n.strip() for n in args.lifelong.split(",") if n.strip()]
        bench = lifelong(names, root=args.root)
    info = bench.stream_info
    if args.json:
        out = info.to_dict()
        for e in out["experiences"]:
            for key in ("class_names", "train_per_class", "test_per_class"):
                e.pop(key)
            labels = e.pop("labels")
            e["label_range"] = [min(labels), max(labels)]
        out["train_images"] = sum(e.train_images for e in info.experiences)
        out["test_images"] = sum(e.test_images for e in info.experiences)
        print(json.dumps(out, indent=2))
    else:
        print(f"{info.kind} stream, {len(info.experiences)} experiences")
        print(f"{'exp':>3}  {'dataset':<14} {'classes':>7} {'train':>7} {'test':>7}  labels")
        for e in info.experiences:
            print(f"{e.index:>3}  {e.dataset:<14} {e.num_classes:>7} {e.train_images:>7} "
                  f"{e.test_images:>7}  {min(e.labels)}..{max(e.labels)}")
    return 0


def run_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` assignments that the tracking and SLURM flags stand for (after the
    user's own ``--set``: a flag wins over the file and over ``--set``)."""
    out = list(args.overrides)
    if args.track or args.tracking_uri or args.experiment:
        out.append("tracking.mlflow=true")
    if getattr(args, "wandb", False):
        out.append("tracking.wandb=true")
    flags = {"tracking.uri": args.tracking_uri, "tracking.experiment": args.experiment,
             "slurm.partition": args.slurm_partition, "slurm.time_min": args.slurm_time,
             "slurm.cpus": args.slurm_cpus, "slurm.gpus": args.slurm_gpus,
             "slurm.mem_gb": args.slurm_mem, "slurm.cluster": args.slurm_cluster,
             "slurm.folder": args.slurm_folder}
    for key, value in flags.items():
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.config import check_names, expand_cells, load_config
    from benchmarks.run.executors import get_executor

    # the checks that need no strategy come first: importing the strategies (and Avalanche)
    # takes seconds, which a typo in the file or a wrong flag should not cost; a cell's
    # hash covers its resolved hyperparameters, so the strategies are checked next
    if args.resume and args.force:
        raise LrbenchError("--resume and --force contradict each other: --resume keeps the "
                           "finished cells that still match, --force recomputes every cell; "
                           "give one of them")
    config = load_config(args.config, run_overrides(args), registries=False)
    if not args.dry_run and not args.check_determinism:
        get_executor(args.executor).check(config.slurm.model_dump())
    older = None
    if args.rerun_before:
        from benchmarks.run.store import older_than

        older = older_than(args.rerun_before)
    check_names(config, args.config, args.overrides)
    reused = config.tuning_seed_overlap()
    if reused and not args.allow_tuning_seeds:
        raise LrbenchError(
            f"{args.config}: seeds {', '.join(map(str, reused))} also tuned this matrix's "
            "hyperparameters (tuned_on_seeds): test numbers on them are optimistic; give "
            "other seeds (--set seeds=[...]) or pass --allow-tuning-seeds")
    cells = expand_cells(config)
    out = args.out or os.path.join("results", config.name)
    if args.dry_run:
        return _dry_run(config, cells, out, args, older)
    from benchmarks.run.preflight import check_data
    from benchmarks.run.store import prepare_store

    cells, broken = check_data(cells, args.skip_corrupt, progress=sys.stderr.isatty(),
                               devices=args.executor == "local")
    if not args.check_determinism:
        from benchmarks.run.tracking import open_tracker

        tracker = open_tracker(config.tracking, out, config.name)
        store = prepare_store(out, config, args.force, args.resume)
    if args.check_determinism:
        from benchmarks.run.cell import check_determinism

        diffs = check_determinism(cells[0], log=lambda msg: print(msg, file=sys.stderr))
        for line in diffs:
            print(f"differs: {line}")
        print(f"{cells[0].id}: two runs gave "
              + ("identical metric values" if not diffs else f"{len(diffs)} differing sections"))
        return 1 if diffs else 0
    from benchmarks.runner import Plan, run_matrix

    # checked above: the runner takes the checked cells and store instead of again
    counts = run_matrix(config, out, jobs=args.jobs, force=args.force, resume=args.resume,
                        checkpoints=args.checkpoints, progress=True, executor=args.executor,
                        ray_address=args.ray_address, skip_corrupt=args.skip_corrupt,
                        rerun_before=args.rerun_before, share_first=args.share_first,
                        plan=Plan(cells, broken, store, older, tracker))
    _print_summary(out, cells)
    print(f"{out}: {counts['finished']} finished, {counts['skipped']} skipped (already "
          f"done), {counts['failed']} failed")
    return 1 if counts["failed"] else 0


def _dry_run(config: Any, cells: list[Any], out: str, args: argparse.Namespace,
             older: Any) -> int:
    """``run --dry-run``: each cell with its hash and whether it is done or would run, the
    store, and whether the real run would be refused (exit 2 with the reason); nothing is
    written and nothing trains. Images are not decoded here: the real run does that once
    (its answer is cached) and may still refuse a broken file. With ``--skip-corrupt`` the
    cells leave out the files the store's last run left out (``skipped.json``)."""
    from pathlib import Path

    from benchmarks.run.preflight import check_cells, mark_skipped
    from benchmarks.run.store import cell_dir, check_layout, check_store, finished, read_skipped

    store = Path(out)
    skipped = read_skipped(store) if args.skip_corrupt else {}
    if skipped:
        cells = mark_skipped(cells, skipped)
    refusal = None
    try:
        check_cells(cells)
        if store.is_dir():
            check_layout(store, config)
            check_store(store, config, args.force, args.resume)
    except LrbenchError as exc:
        refusal = str(exc)
    done = 0
    for cell in cells:
        reuse = not args.force and finished(cell_dir(store, cell), cell, older)
        done += reuse
        print(f"{cell.hash}  {cell.id:<48}  {'done' if reuse else 'will run'}")
    from benchmarks.run.fetch import describe_weights

    for line in describe_weights(cells):
        print(line)
    for line in _estimate_lines(cells):
        print(line)
    where = "exists" if store.is_dir() else "will be created"
    print(f"{len(cells)} cells: {done} done, {len(cells) - done} will run; store {out} "
          f"({where})")
    if refusal:
        raise LrbenchError(f"the run would be refused: {refusal}")
    return 0


def _estimate_lines(cells: list[Any]) -> list[str]:
    """The dry run's expected wall time (:mod:`benchmarks.run.estimate`), or why not."""
    from benchmarks.run.estimate import estimate, stream_infos

    try:
        infos, notes = stream_infos(cells)
        return [*estimate(cells, infos), *notes]
    except Exception as exc:  # noqa: BLE001 (an estimate never fails the dry run)
        return [f"expected wall time: not estimated ({' '.join(str(exc).split())[:160]})"]


def _cmd_report(args: argparse.Namespace) -> int:
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


def _cmd_tune(args: argparse.Namespace) -> int:
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
        print(f"{label:<12} {best.label}: {args.objective} {best.mean:.4f} ({values})")
    print(f"{result.store}: {len(result.trials)} trial(s), {result.trained} cell(s) trained "
          f"now; every trial in {result.files[1]}, the test matrix in {result.files[2]}")
    if failed:  # a cell that did not finish is never a success, whatever the cause
        print(f"lrbench: {len(failed)} trial(s) failed ({abridged(failed, 3)}): their reasons "
              f"are in {result.store}/cells/*/result.json and log.txt; the choice is among "
              "the others", file=sys.stderr)
        return 1
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """``lrbench check``: the contract kit, each check printed as it passes."""
    from benchmarks.contract import check_strategy
    from strategies import make_config

    hparams: dict[str, Any] = {}
    for item in args.hparam:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LrbenchError(f"--hparam {item!r}: give KEY=VALUE, e.g. --hparam lam=2.5")
        try:
            hparams[key.strip()] = json.loads(value)
        except ValueError:
            hparams[key.strip()] = value  # a plain string, e.g. mode=online
    name = args.strategy
    make_config(name, hparams)  # an unknown name or a bad value: one line, exit 2, first
    from benchmarks.config import check_trunk

    check_trunk(args.trunk, "--trunk")  # unknown (or timm missing): one line, exit 2
    if args.device != "cpu":  # an unknown device, or one this host lacks: one line, exit 2
        from benchmarks.config import _device
        from benchmarks.contract import tiny_cell
        from benchmarks.run.preflight import check_devices

        try:
            _device(args.device)
        except ValueError as exc:
            raise LrbenchError(f"--device: {exc}") from None
        check_devices([tiny_cell(name, hparams, device=args.device)])
    model = "small CNN" if args.trunk == "small_cnn" else args.trunk
    print(f"{name}: contract kit (3 synth-fg experiences, {model})", flush=True)
    done: list[str] = []

    def passed(check: str) -> None:
        done.append(check)
        print(f"  ok    {check}", flush=True)

    from benchmarks.run.cell import failure_reason, interrupted, note_signals

    try:
        with note_signals():
            check_strategy(name, hparams, on_check=passed, trunk=args.trunk,
                           device=args.device)
    except LrbenchError:  # unknown strategy, bad hyperparameter: exit 2
        raise
    except BaseException as exc:  # a failed check, or the plugin raised (or exited) in a
        # cell: SystemExit, KeyboardInterrupt without a signal included
        if isinstance(exc, KeyboardInterrupt) and interrupted():
            raise
        reason = str(exc) if isinstance(exc, AssertionError) else failure_reason(exc)
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = "" if isinstance(exc, AssertionError) or tb is None else \
            f" (raised at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
        print(f"  FAIL  {' '.join((reason + where).split())}")
        print(f"{name}: failed after {len(done)} passing check(s)")
        if not isinstance(exc, Exception):  # said on stderr too: it is easy to miss
            print(f"lrbench: {name}: a contract-kit cell failed: {failure_reason(exc)}",
                  file=sys.stderr)
        return 1
    print(f"{name}: all {len(done)} checks passed")
    return 0


def _print_summary(store: str, cells: list[Any]) -> None:
    """Mean final Recall@1 and forgetting per scenario and strategy (over seeds), over the
    finished ``cells`` of the current matrix (stale cells of the store left out)."""
    from benchmarks.run.store import DamagedResult, cell_dir, read_result

    table: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    k = 1
    for cell in cells:
        try:
            result = read_result(cell_dir(Path(store), cell) / "result.json")
        except (OSError, DamagedResult):
            continue
        if result is None or result.get("status") != "finished" or result.get(
                "config_hash") != cell.hash:
            continue
        s = result["payload"].get("summary") or {}
        k = s.get("k", 1)
        key = (result["config"]["scenario"]["name"], result["config"]["strategy"])
        table.setdefault(key, []).append(
            tuple(math.nan if s.get(name) is None else float(s[name])
                  for name in ("final_seen", "final_mean", "forgetting")))
    if not table:
        return

    def mean(vals: list[float]) -> str:  # undefined (one experience, an old store): "–"
        ok = [v for v in vals if math.isfinite(v)]
        return f"{statistics.mean(ok):.3f}" if len(ok) == len(vals) else "–"

    w = max(len("scenario"), *(len(sc) for sc, _ in table))
    print("mean over seeds; seen = gallery of every class seen, per-task = mean over "
          "each task's own gallery")
    print(f"{'scenario':<{w}} {'strategy':<10} {'seeds':>5} {f'R@{k} seen':>10} "
          f"{f'R@{k} per-task':>14} {'forgetting':>10}")
    for (scenario, strategy), vals in sorted(table.items()):
        seen, fin, fgt = (mean([v[i] for v in vals]) for i in range(3))
        print(f"{scenario:<{w}} {strategy:<10} {len(vals):>5} {seen:>10} {fin:>14} {fgt:>10}")


COMMANDS = {"list": _cmd_list, "data": _cmd_data, "stream": _cmd_stream, "run": _cmd_run,
            "report": _cmd_report, "check": _cmd_check, "tune": _cmd_tune}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly as Ctrl-C: running cells (and their worker processes) are
    stopped, finished results are kept, the tidy table is rebuilt, the lock released."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lrbench`` console script; returns the exit code."""
    _quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LrbenchError as exc:  # strategies.StrategyError included
        print(f"lrbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("lrbench: terminated", file=sys.stderr)
        return 143
    except SystemExit as exc:  # raised inside a command (a plugin, a library it calls):
        # never a silent success
        print(f"lrbench: error: the command was ended by SystemExit({exc.code!r}) raised "
              "inside it (a strategy plugin, or a library it calls); what finished before "
              "is kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lrbench: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """Console-script wrapper: exit with :func:`main`'s code.

    A reader that stops early (``lrbench list strategies | head``) closes the pipe: that
    ends the output quietly, as in any Unix tool, not with a traceback."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)  # a scheduler's kill stops cleanly, as Ctrl-C
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at devnull so that cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    run()
