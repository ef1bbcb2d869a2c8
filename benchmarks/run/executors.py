"""Where cells run: in this process, in a local process pool, or as Ray tasks.

Every executor is one function ``run(todo, record, launch)``: it runs each cell of
``todo`` through :func:`benchmarks.run.cell._worker` somewhere, and hands each outcome back
to ``record(cell, outcome, started)`` in this process, the only writer of the store, as
cells finish. :data:`EXECUTORS` maps the names ``--executor`` accepts to them; a new one is
a function and an entry. On Ctrl-C an executor stops its cells and re-raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from benchmarks.config import Cell
from benchmarks.errors import LrbenchError
from benchmarks.run.cell import _worker

#: ``record(cell, outcome, started)``: one cell's outcome back in this process
Record = Callable[[Cell, dict[str, Any], float], None]


@dataclass(frozen=True)
class Launch:
    """How to run the cells: ``jobs`` at once (local), the Ray cluster's ``ray_address``,
    and ``args(cell)``, the worker's arguments after the cell (checkpoint, logging, folder:
    only for executors whose workers share the store's disk)."""

    jobs: int = 1
    ray_address: str | None = None
    args: Callable[[Cell], tuple[Any, ...]] = lambda cell: ()


def run_local(todo: list[Cell], record: Record, launch: Launch) -> None:
    """Run cells in this process (``jobs`` 1) or in ``jobs`` spawned processes."""
    if launch.jobs <= 1:
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


@dataclass(frozen=True)
class Executor:
    """An executor's ``run`` function, and whether its workers share this host's disk
    (then the caches are warmed here first, and checkpoints and loggers are allowed)."""

    run: Callable[[list[Cell], Record, Launch], None]
    shares_disk: bool


EXECUTORS: dict[str, Executor] = {
    "local": Executor(run_local, shares_disk=True),
    "ray": Executor(run_ray, shares_disk=False),
}


def get_executor(name: str) -> Executor:
    """The executor called ``name``; a one-line ``LrbenchError`` for an unknown one."""
    if name not in EXECUTORS:
        raise LrbenchError(f"unknown executor {name!r}; use {' or '.join(EXECUTORS)}")
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


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops


def _run_pool(todo: list[Cell], jobs: int, record: Callable[..., None],
              args: Callable[[Cell], tuple[Any, ...]]) -> None:
    """Run cells in ``jobs`` spawned processes; on Ctrl-C stop them and re-raise."""
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_ignore_sigint) as ex:
        futures = {ex.submit(_worker, c, *args(c)): (c, time.time()) for c in todo}
        try:
            for fut in as_completed(futures):
                cell, started = futures[fut]
                record(cell, fut.result(), started)
        except KeyboardInterrupt:
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
            ex.shutdown(wait=False, cancel_futures=True)
            raise

