"""The matrix runner: every cell of a matrix through the retrieval template, into the
results store.

This module only orchestrates; each concern has its own module in :mod:`benchmarks.run`:
``store`` (the results folder, ``result.json``, the lock), ``preflight`` (the checks
before any training), ``cell`` (one cell built and run) and ``executors`` (where cells run).
:func:`run_matrix` checks the matrix (:func:`make_plan`, unless given the :class:`Plan` the
CLI already made), takes the store, skips the cells already finished, runs the rest on an
executor and writes each outcome as it arrives, then rebuilds the tidy table. Cells run in
this process (``jobs=1``) or in ``jobs`` worker processes, on Ray, or as SLURM jobs through
submitit; each computes with its own ``training.threads`` (so ``jobs`` changes only how
many run at once, never a number), and results come back to this process, the only writer
of the store, which also logs them to MLflow when the matrix tracks (``tracking``).

Cells that would train the same thing (a tuning's trials, an ablation's variants, a drift
compensation beside the strategy it wraps) train it once and share it, to the same bits:
:mod:`benchmarks.run.sharing`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.config import Cell, MatrixConfig, expand_cells
from benchmarks.errors import LrbenchError
from benchmarks.run.cell import final_line, warm_caches
from benchmarks.run.executors import Launch, get_executor
from benchmarks.run.preflight import check_data, settle_checkpoints
from benchmarks.run.provenance import versions
from benchmarks.run.sharing import Sharing
from benchmarks.run.store import (
    DamagedResult,
    cell_dir,
    clean_temporary,
    finished,
    older_than,
    prepare_store,
    read_result,
    result_path,
    set_aside,
    stale_cells,
    stale_lines,
    store_lock,
    write_matrix,
    write_result,
    write_skipped,
    write_tidy,
)
from benchmarks.run.tracking import Tracker, open_tracker


@dataclass
class Plan:
    """A matrix already checked, as the CLI checks it before :func:`run_matrix`: its
    ``cells`` (expanded and through :func:`~benchmarks.run.preflight.check_data`, broken
    files marked), the ``broken`` files found, the prepared ``store``
    (:func:`~benchmarks.run.store.prepare_store`) and the ``older`` test of
    ``--rerun-before`` (:func:`~benchmarks.run.store.older_than`), or None, and the MLflow
    ``tracker`` (:func:`~benchmarks.run.tracking.open_tracker`), or None."""

    cells: list[Cell]
    broken: dict[str, list[tuple[str, str]]]
    store: Path
    older: Callable[[str], bool] | None = None
    tracker: Tracker | None = None


def make_plan(config: MatrixConfig, out: str | Path, force: bool = False,
              resume: bool = False, progress: bool = True, skip_corrupt: bool = False,
              rerun_before: str | None = None, devices: bool = True) -> Plan:
    """Check a matrix before any training: ``rerun_before`` a commit, the cells' data
    (broken images refused, or with ``skip_corrupt`` left out), the MLflow tracking URI
    usable when tracking is on, the store writable and not holding another matrix.
    ``devices``: check that this host has the cells' device (not for Ray, whose workers
    may be other hosts)."""
    older = older_than(rerun_before) if rerun_before else None
    cells, broken = check_data(expand_cells(config), skip_corrupt, progress, devices)
    tracker = open_tracker(config.tracking, out, config.name)
    return Plan(cells, broken, prepare_store(out, config, force, resume), older, tracker)


def run_matrix(config: MatrixConfig, out: str | Path, jobs: int = 1, force: bool = False,
               resume: bool = False, checkpoints: bool = False, progress: bool = True,
               executor: str = "local", ray_address: str | None = None,
               skip_corrupt: bool = False, rerun_before: str | None = None,
               plan: Plan | None = None, share_first: bool = True,
               keep_first: bool = False, note_stale: bool = True) -> dict[str, Any]:
    """Run every cell not yet finished; return counts of finished/skipped/failed cells.

    Every image of the real datasets is decoded once first
    (:func:`~benchmarks.run.preflight.find_corrupt`): a broken one refuses the matrix, or
    with ``skip_corrupt`` is left out of every cell that reads it (recorded in each cell's
    config and in ``skipped.json``).

    ``rerun_before`` (a git commit) recomputes finished cells that an older lrbench
    commit computed (see :func:`~benchmarks.run.store.older_than`).

    ``plan``, the :func:`make_plan` of this matrix already made (by the CLI, with the same
    ``out``, ``force``, ``resume``, ``skip_corrupt`` and ``rerun_before``), saves checking
    it again; without it, this checks everything itself.

    ``executor="local"`` runs ``jobs`` processes here; ``"ray"`` submits one Ray task per
    cell (``training.threads`` CPUs, and 1 GPU when the cell trains on CUDA) to the cluster
    at ``ray_address`` (or a local one, or the one already initialised); results travel
    back to this process, so workers need no shared disk. ``"submitit"`` submits one SLURM
    job per cell (a job array; ``config.slurm`` sizes each job), or with ``slurm.cluster:
    local`` runs them as local processes; results travel back through the jobs' return
    values, as Ray's do.

    ``share_first``: cells with one first-experience key train that experience once (see
    the module docstring; local executor, CPU cells, no Avalanche loggers). The shared
    checkpoints live for one call: any found at the start (an interrupted run's) and those
    written are removed, unless ``keep_first`` (a caller that runs more such cells next and
    removes them itself when it ends, as ``tune`` does). ``note_stale``: say on stderr which
    finished cells of the store are not the matrix's (off for ``tune``, whose store holds
    every trial and whose rounds run a few of them).

    With ``config.tracking`` on, each cell's result is logged to MLflow as it is written
    (and each cell a rerun skips, if not logged yet), from this process: see
    :mod:`benchmarks.run.tracking`.
    """
    from tqdm import tqdm


    ex = get_executor(executor)
    ex.check(config.slurm.model_dump())
    if not ex.shares_disk and (checkpoints or config.logging.tensorboard
                               or config.logging.csv):
        raise LrbenchError(f"--checkpoints and logging need the local executor ({executor} "
                           "workers share no disk with the store); drop one or the other")
    if plan is None:
        plan = make_plan(config, out, force, resume, progress, skip_corrupt, rerun_before,
                         devices=executor == "local")
    cells, broken, store, tracker = plan.cells, plan.broken, plan.store, plan.tracker
    counts = {"finished": 0, "skipped": 0, "failed": 0}
    with store_lock(store):
        clean_temporary(store)  # left by a writer killed mid-write: only we write now
        settle_checkpoints(store, cells, checkpoints, keep_first, force, plan.older)
        if tracker is not None:
            tracker.start()
        write_matrix(store, config, cells)
        write_skipped(store, broken)
        if broken:
            n_bad = sum(len(b) for b in broken.values())
            print(f"--skip-corrupt: leaving out {n_bad} image(s) that cannot be decoded "
                  f"(listed in {store / 'skipped.json'})", file=sys.stderr)
        todo = []
        for cell in cells:
            try:
                read_result(cell_dir(store, cell) / "result.json")
            except DamagedResult as exc:
                aside = set_aside(cell_dir(store, cell) / "result.json")
                print(f"lrbench: note: {str(exc).partition('; ')[0]}; recomputing the cell "
                      f"(the damaged file is kept as {aside.name})", file=sys.stderr)
            except OSError:
                pass  # unreadable: recomputed below, the new result written over it
            if not force and finished(cell_dir(store, cell), cell, plan.older):
                counts["skipped"] += 1
            else:
                todo.append(cell)
        # an outcome no worker reported (a pool that broke, a job that never started) ran
        # nowhere: the submitting host is not named as if it had run the cell
        host = {"note": "no worker reported its machine"}
        vers = versions()
        bar = tqdm(total=len(cells), initial=counts["skipped"], desc=config.name, unit="cell",
                   disable=not progress)

        def record(cell: Cell, outcome: dict[str, Any], started: float) -> None:
            kept = write_result(store, cell, outcome, started, vers,
                                outcome.get("machine") or host)
            also = f" (its finished result of another config kept as {kept})" if kept else ""
            if outcome["status"] == "finished":
                bar.write(f"done   {cell.id}: {final_line(outcome['payload']['summary'])}{also}")
            else:
                bar.write(f"FAILED {cell.id}: {outcome['reason']}{also}")
            if tracker is not None:
                tracker.log_cell(result_path(store, cell))
            counts[outcome["status"]] += 1
            bar.update(1)

        logging = config.logging.model_dump()

        # not with Avalanche's loggers (a cell's own logs would lack the first experience)
        share = share_first and ex.shares_disk and not (logging["tensorboard"]
                                                         or logging["csv"])
        sharing = Sharing.plan(store, todo, share, keep_first)

        def args(cell: Cell) -> tuple[Any, ...]:
            folder = cell_dir(store, cell)
            return (str(folder / "checkpoint.pt") if checkpoints else None, logging,
                    str(folder), *sharing.args(cell))

        if tracker is not None:  # kept from an earlier run: logged unless already there
            running = {cell.id for cell in todo}
            for cell in cells:
                if cell.id not in running:
                    tracker.log_cell(result_path(store, cell))
        if ex.shares_disk and todo:
            warm_caches(todo, bar.write)

        launch = Launch(jobs=jobs, ray_address=ray_address, args=args, store=store,
                        slurm=config.slurm.model_dump())
        try:
            ex.run(todo, record, launch)
        except KeyboardInterrupt:
            # first Ctrl-C: running cells stop, finished ones are already on disk; rebuild
            # the tidy table and release the lock. A second Ctrl-C stops this at once; the
            # store still resumes (every file is written atomically, a stale lock is cleared)
            bar.write("interrupted: finished cells are kept; rerun the same command to resume "
                      "(Ctrl-C again to stop at once)", file=sys.stderr)
            bar.close()
            write_tidy(store, cells)
            if tracker is not None:
                tracker.log_store(store)
                tracker.finish("KILLED")
            raise
        bar.close()
        if share and not keep_first:
            sharing.remove()
        counts["rows"] = write_tidy(store, cells)
        if tracker is not None:
            tracker.log_store(store)
            tracker.finish("FAILED" if counts["failed"] else "FINISHED")
        for line in stale_lines(stale_cells(store, cells)) if note_stale else []:
            print(line, file=sys.stderr)
    return counts
