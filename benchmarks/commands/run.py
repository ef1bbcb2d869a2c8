"""``lrbench run``: a matrix into a results store (or its dry run, or a determinism check)."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.commands.common import (
    at_least,
    positive_float,
)
from benchmarks.errors import LrbenchError


def add_parser(sub: Any) -> None:
    """``lrbench run``'s arguments, added to the subcommands ``sub``."""
    p = sub.add_parser("run", help="run a benchmark matrix into a results store",
                       description="Run every (scenario, strategy, seed) cell of a matrix "
                       "file; finished cells with the same config hash are skipped. Exit "
                       "code 0 when every cell finished, 1 when some failed (recorded in the "
                       "store), 2 for bad input.")
    p.add_argument("config", help="matrix file (YAML), e.g. configs/demo.yaml")
    p.add_argument("--out", help="results store (default: results/<matrix name>)")
    p.add_argument("--jobs", type=at_least(1), default=1,
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
    g.add_argument("--slurm-time", metavar="MIN", type=at_least(1),
                   help="wall-clock limit of one cell's job in minutes (default 60)")
    g.add_argument("--slurm-cpus", metavar="N", type=at_least(1),
                   help="CPUs per cell's job (default: training.threads)")
    g.add_argument("--slurm-gpus", metavar="N", type=at_least(0),
                   help="GPUs per cell's job (default: 1 for CUDA cells, else 0)")
    g.add_argument("--slurm-mem", metavar="GB", type=positive_float,
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
                   "train it once and share it, and cells that train alike (a drift "
                   "compensation beside the strategy it wraps) share every experience's "
                   "training loop, and strategies whose first loop is finetune's share "
                   "that one: the same numbers, less time)")
    p.add_argument("--allow-tuning-seeds", action="store_true",
                   help="run even where the matrix's seeds reuse a seed that tuned its "
                   "hyperparameters (tuned_on_seeds, written by lrbench tune); by default "
                   "refused, as test numbers on tuning seeds are optimistic")
    p.add_argument("--check-determinism", action="store_true",
                   help="run the first cell twice here and compare every metric value, and "
                   "with the store's finished result of that cell when it has one (another "
                   "commit or kind of CPU shows there; a line says when there is none to "
                   "compare with); exit 0 when identical, 1 otherwise; the store is not "
                   "touched")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out images that cannot be decoded instead of refusing the "
                   "matrix (every image is decoded once before training; the files left out "
                   "are recorded in each cell's config and in skipped.json)")



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


def command(args: argparse.Namespace) -> int:
    """``lrbench run``: validate the matrix, then run it (or its dry run or determinism check)."""
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
    out = args.out or os.path.join("results", config.name)
    if not args.dry_run and not args.check_determinism:
        from benchmarks.run.store import check_out_folder

        check_out_folder(out)
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
    if args.dry_run:
        return dry_run(config, cells, out, args, older)
    from benchmarks.run.preflight import check_data
    from benchmarks.run.store import prepare_store

    cells, broken = check_data(cells, args.skip_corrupt, progress=sys.stderr.isatty(),
                               devices=args.executor == "local")
    if not args.check_determinism:
        from benchmarks.run.tracking import open_tracker

        tracker = open_tracker(config.tracking, out, config.name)
        store = prepare_store(out, config, args.force, args.resume)
    if args.check_determinism:
        return determinism(cells[0], out)
    from benchmarks.runner import Plan, run_matrix

    # checked above: the runner takes the checked cells and store instead of again
    counts = run_matrix(config, out, jobs=args.jobs, force=args.force, resume=args.resume,
                        checkpoints=args.checkpoints, progress=True, executor=args.executor,
                        ray_address=args.ray_address, skip_corrupt=args.skip_corrupt,
                        rerun_before=args.rerun_before, share_first=args.share_first,
                        plan=Plan(cells, broken, store, older, tracker))
    print_summary(out, cells)
    print(f"{out}: {counts['finished']} finished, {counts['skipped']} skipped (already "
          f"done), {counts['failed']} failed")
    return 1 if counts["failed"] else 0


def dry_run(config: Any, cells: list[Any], out: str, args: argparse.Namespace,
             older: Any) -> int:
    """``run --dry-run``: each cell with its hash and whether it is done or would run, the
    store, and whether the real run would be refused (exit 2 with the reason); nothing is
    written and nothing trains. Images are not decoded here: the real run does that once
    (its answer is cached) and may still refuse a broken file. With ``--skip-corrupt`` the
    cells leave out the files the store's last run left out (``skipped.json``)."""
    from pathlib import Path

    from benchmarks.run.preflight import check_cells, mark_skipped
    from benchmarks.run.store import (
        cell_dir,
        check_layout,
        check_out_folder,
        check_store,
        finished,
        read_skipped,
    )

    store = Path(out)
    skipped = read_skipped(store) if args.skip_corrupt else {}
    if skipped:
        cells = mark_skipped(cells, skipped)
    refusal = None
    try:
        check_cells(cells)
        check_out_folder(store)
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
    for line in estimate_lines(cells):
        print(line)
    where = "exists" if store.is_dir() else "will be created"
    print(f"{len(cells)} cells: {done} done, {len(cells) - done} will run; store {out} "
          f"({where})")
    if refusal:
        raise LrbenchError(f"the run would be refused: {refusal}")
    return 0


def estimate_lines(cells: list[Any]) -> list[str]:
    """The dry run's expected wall time (:mod:`benchmarks.run.estimate`), or why not."""
    from benchmarks.run.estimate import estimate, stream_infos

    try:
        infos, notes = stream_infos(cells)
        return [*estimate(cells, infos), *notes]
    except Exception as exc:  # noqa: BLE001 (an estimate never fails the dry run)
        return [f"expected wall time: not estimated ({' '.join(str(exc).split())[:160]})"]


def determinism(cell: Any, store: str) -> int:
    """``--check-determinism``: the cell run twice here, and against the store's finished
    result of the same config when there is one (the machine and commit that wrote it
    named); 0 when every metric value is identical, 1 otherwise."""
    from benchmarks.run.cell import check_determinism
    from benchmarks.run.provenance import machine
    from benchmarks.run.store import cell_dir, finished_result, machine_label

    stored, why = finished_result(cell_dir(Path(store), cell), cell)
    diffs = check_determinism(cell, log=lambda msg: print(msg, file=sys.stderr),
                              stored=stored["payload"] if stored else None)
    for line in diffs:
        print(f"differs: {line}")
    here = [d for d in diffs if not d.startswith("store: ")]
    print(f"{cell.id}: two runs gave "
          + ("identical metric values" if not here else f"{len(here)} differing sections"))
    if stored is None and Path(store).is_dir():
        print(f"{cell.id}: not compared with {store}: {why}")
    if stored:
        there = len(diffs) - len(here)
        commit = str((stored.get("versions") or {}).get("lrbench_commit", "unknown"))[:10]
        print(f"{cell.id}: against {store}'s result (commit {commit}, "
              f"{machine_label(stored.get('host'))}; this machine: {machine_label(machine())}): "
              + ("identical metric values" if not there else f"{there} differing sections"))
    return 1 if diffs else 0


def print_summary(store: str, cells: list[Any]) -> None:
    """Mean final Recall@1 and forgetting per scenario and strategy (over seeds), over the
    finished ``cells`` of the current matrix (stale cells of the store left out)."""
    from benchmarks.run.store import cell_dir, finished_result

    table: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    k = 1
    for cell in cells:
        result, _ = finished_result(cell_dir(Path(store), cell), cell)
        if result is None:
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
