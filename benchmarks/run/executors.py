"""Where cells run: in this process, in a local process pool, as Ray tasks, or as SLURM
jobs through submitit.

Every executor is one function ``run(todo, record, launch)``: it runs each cell of
``todo`` through :func:`benchmarks.run.cell._worker` somewhere, and hands each outcome back
to ``record(cell, outcome, started)`` in this process, the only writer of the store, as
cells finish. :data:`EXECUTORS` maps the names ``--executor`` accepts to them; a new one is
a function and an entry. On Ctrl-C an executor stops its cells and re-raises.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.config import Cell
from benchmarks.errors import LrbenchError
from benchmarks.run.cell import _worker, note_signals

#: ``record(cell, outcome, started)``: one cell's outcome back in this process
Record = Callable[[Cell, dict[str, Any], float], None]


@dataclass(frozen=True)
class Launch:
    """How to run the cells: ``jobs`` at once (local, and submitit's local cluster), the
    Ray cluster's ``ray_address``, ``args(cell)``, the worker's arguments after the cell
    (:func:`~benchmarks.run.cell._worker`'s checkpoint, logging, folder and shared first
    experience: only for executors whose workers share the store's disk),
    the ``store`` folder and the ``slurm`` settings (:class:`~benchmarks.config.SlurmSpec`
    as a mapping) of the submitit executor."""

    jobs: int = 1
    ray_address: str | None = None
    args: Callable[[Cell], tuple[Any, ...]] = lambda cell: ()
    store: Path | None = None
    slurm: dict[str, Any] = field(default_factory=dict)


def run_local(todo: list[Cell], record: Record, launch: Launch) -> None:
    """Run cells in this process (``jobs`` 1) or in ``jobs`` spawned processes."""
    if launch.jobs <= 1:
        with note_signals():  # a KeyboardInterrupt without SIGINT fails its cell only
            for cell in todo:
                started = time.time()
                record(cell, _worker(cell, *launch.args(cell)), started)
    else:
        _run_pool(todo, launch.jobs, record, launch.args)


def run_ray(todo: list[Cell], record: Record, launch: Launch) -> None:
    """One Ray task per cell (its ``training.threads`` CPUs, and 1 GPU when it trains on
    CUDA) on the cluster at ``launch.ray_address`` (or a local one, or the one already
    initialised); outcomes travel back, so workers need no shared disk."""
    _run_on_ray(todo, record, launch.ray_address)


def run_submitit(todo: list[Cell], record: Record, launch: Launch) -> None:
    """One submitit job per cell: a SLURM job array sized by ``launch.slurm``, or with
    ``cluster: local`` local processes (``jobs`` at once) that run the same code path.
    Each job returns its outcome, which travels back through submitit's folder (default
    ``<store>/submitit``; on a cluster it must be on a disk the nodes share); the workers
    never write into the store."""
    _run_on_submitit(todo, record, launch)


@dataclass(frozen=True)
class Executor:
    """An executor's ``run`` function, whether its workers share this host's disk (then
    the caches are warmed here first, and checkpoints and loggers are allowed), and its
    ``check(slurm)``, run before anything is written or trained (a one-line
    ``LrbenchError`` when it cannot run here)."""

    run: Callable[[list[Cell], Record, Launch], None]
    shares_disk: bool
    check: Callable[[dict[str, Any]], None] = lambda slurm: None


EXECUTORS: dict[str, Executor] = {
    "local": Executor(run_local, shares_disk=True),
    "ray": Executor(run_ray, shares_disk=False),
    "submitit": Executor(run_submitit, shares_disk=False,
                         check=lambda slurm: _import_submitit(slurm)),
}


def get_executor(name: str) -> Executor:
    """The executor called ``name``; a one-line ``LrbenchError`` for an unknown one."""
    if name not in EXECUTORS:
        raise LrbenchError(f"unknown executor {name!r}; use {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def _run_on_ray(cells: list[Cell], record: Callable[..., None],
                address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise LrbenchError("the ray executor needs Ray: pip install 'lrbench[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(_worker)
    refs = {}
    for cell in cells:
        gpus = 1 if cell.training.device.startswith("cuda") else 0
        cpus = cell.training.threads
        ref = task.options(num_cpus=cpus, num_gpus=gpus).remote(cell)
        refs[ref] = (cell, time.time())
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        cell, started = refs[done[0]]
        record(cell, ray.get(done[0]), started)


def submitit_executor(slurm: dict[str, Any], store: Path | None) -> Any:
    """A configured ``submitit.AutoExecutor`` for ``slurm`` settings; a one-line
    ``LrbenchError`` when submitit is not installed or there is no SLURM here."""
    submitit = _import_submitit(slurm)
    folder = slurm.get("folder") or (Path(store or ".") / "submitit")
    try:
        executor = submitit.AutoExecutor(folder=str(folder),
                                         cluster=slurm.get("cluster", "slurm"))
    except OSError as exc:
        raise LrbenchError(f"cannot write submitit's folder {str(folder)!r} "
                           f"({exc.strerror}); set slurm.folder to a writable one") from None
    return executor


def _import_submitit(slurm: dict[str, Any]) -> Any:
    """submitit, checked usable for ``slurm.cluster`` (a one-line error otherwise)."""
    try:
        import submitit
    except ImportError:
        raise LrbenchError("the submitit executor needs submitit: pip install "
                           "'lrbench[slurm]'") from None
    if slurm.get("cluster", "slurm") == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise LrbenchError("--executor submitit found no SLURM here (no srun on PATH); "
                           "run lrbench on the cluster's login node, or set "
                           "slurm.cluster=local (--slurm-cluster local) to run the jobs as "
                           "local processes")
    return submitit


def _job_parameters(cells: list[Cell], slurm: dict[str, Any]) -> dict[str, Any]:
    """submitit's parameters for one cell's job (the largest any cell of ``cells`` needs)."""
    threads = max(c.training.threads for c in cells)
    cuda = any(c.training.device.startswith("cuda") for c in cells)
    params: dict[str, Any] = {
        "name": "lrbench", "timeout_min": int(slurm.get("time_min") or 60),
        "cpus_per_task": slurm.get("cpus") or threads, "tasks_per_node": 1, "nodes": 1,
        "gpus_per_node": slurm.get("gpus") if slurm.get("gpus") is not None else int(cuda),
        "slurm_array_parallelism": int(slurm.get("array_parallelism") or 256),
    }
    if slurm.get("mem_gb"):
        params["mem_gb"] = slurm["mem_gb"]
    if slurm.get("partition"):
        params["slurm_partition"] = slurm["partition"]
    return params


def _run_on_submitit(cells: list[Cell], record: Record, launch: Launch) -> None:
    if not cells:
        return
    executor = submitit_executor(launch.slurm, launch.store)
    executor.update_parameters(**_job_parameters(cells, launch.slurm))
    local = launch.slurm.get("cluster") == "local"
    # a cluster queues the whole array (slurm.array_parallelism at once); submitit's local
    # executor starts every job it is given at once, so there cells go ``jobs`` at a time
    window = max(launch.jobs, 1) if local else len(cells)
    waiting = list(cells)
    running: dict[Any, tuple[Cell, float]] = {}
    try:
        while waiting or running:
            if waiting and len(running) < window:
                batch, waiting = waiting[:window - len(running)], waiting[window - len(running):]
                if local:  # each job's controller process writes its own errors there
                    with _stderr_to(Path(executor.folder) / "controllers.err"):
                        jobs = [executor.submit(_worker, cell) for cell in batch]
                else:
                    with executor.batch():
                        jobs = [executor.submit(_worker, cell) for cell in batch]
                for job, cell in zip(jobs, batch, strict=True):
                    running[job] = (cell, time.time())
            done = [job for job in running if job.done()]
            if not done:
                time.sleep(0.5)
                continue
            for job in done:
                cell, started = running.pop(job)
                record(cell, _job_outcome(job), started)
    except KeyboardInterrupt:
        for job in running:
            job.cancel(check=False)
        raise


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point this process's stderr (file descriptor 2) at ``path`` for a moment, so that
    child processes started meanwhile inherit that file as their stderr. submitit's local
    executor starts one controller process per job, which prints a traceback when it is
    cancelled (by its SIGINT, or a terminal's Ctrl-C): it belongs in the job's folder, not
    between lrbench's own one-line messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as fh:
            os.dup2(fh.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _job_outcome(job: Any) -> dict[str, Any]:
    """A finished job's outcome: what ``_worker`` returned, or a failure when the job itself
    died (time limit, out of memory, node failure) with the scheduler's reason."""
    try:
        return job.result()
    except Exception as exc:
        text = " ".join(str(exc).split())[:400]
        return {"status": "failed", "log": [str(exc)],
                "reason": f"submitit job {job.job_id} failed: {text} (its logs: "
                          f"{job.paths.stderr})"}


def _init_worker(parent: int) -> None:
    """A pool worker's start: Ctrl-C is the parent's to handle, and the worker dies with
    its parent. A parent killed with ``kill -9`` cannot stop its workers, which would
    otherwise live on (a gigabyte each) blocked on the pool's pipe: on Linux the kernel
    kills them (``PR_SET_PDEATHSIG``); elsewhere a thread watches for the parent to go."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    if not _die_with_parent():
        import threading

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="lrbench-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent ends; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _run_pool(todo: list[Cell], jobs: int, record: Callable[..., None],
              args: Callable[[Cell], tuple[Any, ...]]) -> None:
    """Run cells in ``jobs`` spawned processes (which die with this one); on Ctrl-C stop
    them and re-raise. A worker process that dies (``os._exit`` in a plugin, the kernel's
    out-of-memory killer) fails the cells not yet done, with the reason, instead of a
    traceback: the finished ones are already recorded."""
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(os.getpid(),)) as ex:
        futures = {ex.submit(_worker, c, *args(c)): (c, time.time()) for c in todo}
        try:
            for fut in as_completed(futures):
                cell, started = futures[fut]
                try:
                    outcome = fut.result()
                except BrokenProcessPool as exc:
                    why = " ".join(str(exc).split())[:300]
                    outcome = {"status": "failed", "log": [why], "reason": (
                        f"its worker process died before the cell finished ({why}); the "
                        "cells running then fail with it: rerun the matrix to compute them")}
                record(cell, outcome, started)
        except KeyboardInterrupt:
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
            ex.shutdown(wait=False, cancel_futures=True)
            raise

