"""Weights & Biases tracking of a matrix run, beside MLflow (:mod:`benchmarks.run.tracking`).

Avalanche and Mammoth, the continual-learning libraries lrbench's users come from, log to
W&B; ``tracking: {wandb: true}`` (or ``lrbench run --wandb``) logs there too, from the same
place MLflow is logged from: the process that owns the store, reading each cell's
``result.json`` once it is written, so every value W&B holds is the store's.

W&B has no nested runs, so each cell is one run, grouped by the matrix's store (``group``:
the matrix name and a short hash of the store's path), ``job_type`` its scenario, named by
the cell id, with:

* config: the cell's resolved config (nested, as ``result.json`` holds it), its
  ``config_hash`` and ``id``;
* history, the step being the experience just trained: the metrics of
  :func:`benchmarks.run.tracking.cell_metrics` (``seen.recall_at_K``, ``taskJ.recall_at_K``,
  ``loss.<term>``, ``steps``; the ``summary.*`` values at the last step);
* summary: the ``summary.*`` values, and ``status``;
* tags: ``lrbench``, the strategy, ``status``.

``tracking.wandb_project`` (default: the matrix name) and ``tracking.wandb_entity`` pick the
project; W&B's own settings apply otherwise (``WANDB_MODE=offline`` writes the runs under
``WANDB_DIR``, default ``./wandb``, for ``wandb sync`` later). A rerun logs only the cells not
yet logged with the same result (``<store>/wandb.json`` remembers them). Without a login and
not offline, the run is refused before training in one line; a failure while the matrix
runs is a one-line warning and W&B tracking stops, never a lost result.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.errors import LrbenchError

#: the store's record of the cells logged to W&B: cell id -> result stamp
LOGGED = "wandb.json"


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise LrbenchError("W&B tracking needs wandb: pip install 'lrbench[wandb]' (or turn "
                           "tracking.wandb off)") from None
    return wandb


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:300]


def history(result: dict[str, Any]) -> dict[int, dict[str, float]]:
    """A finished cell's metrics as W&B history rows, step -> {name: value}: exactly the
    values MLflow gets (:func:`benchmarks.run.tracking.cell_metrics`)."""
    from benchmarks.run.track_values import cell_metrics

    rows: dict[int, dict[str, float]] = {}
    for name, value, step in cell_metrics(result):
        rows.setdefault(step, {})[name] = value
    return dict(sorted(rows.items()))


class WandbTracker:
    """One W&B run per cell of a store (the interface of ``tracking.Tracker``)."""

    def __init__(self, wandb: Any, project: str, entity: str | None, store: Path,
                 matrix_name: str, warn: Callable[[str], None]) -> None:
        self.wandb, self.project, self.entity = wandb, project, entity
        self.store, self.matrix_name, self.warn = store, matrix_name, warn
        key = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:8]
        self.group = f"{matrix_name}-{key}"
        self.logged: dict[str, str] = {}
        self.broken = False

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        if self.broken:
            return
        try:
            action()
        except Exception as exc:  # the store has every result: tracking must not lose one
            self.broken = True
            self.warn(f"lrbench: warning: W&B tracking stopped ({what}: {_one_line(exc)}); "
                      "every result is in the store: rerun the same command to log the "
                      "missing runs")

    def start(self) -> None:
        """Read which cells this store already logged (called once the store is held)."""
        def read() -> None:
            path = self.store / LOGGED
            self.logged = json.loads(path.read_text()) if path.is_file() else {}

        self._guard("the store's W&B record", read)

    def log_cell(self, result_path: Path) -> None:
        """Log one cell's ``result.json`` as a W&B run, unless this result is logged."""
        self._guard(f"cell {result_path.parent.name}", lambda: self._log_cell(result_path))

    def _log_cell(self, result_path: Path) -> None:
        from benchmarks.run.store import atomic_write, read_result

        result = read_result(result_path)
        if result is None:
            return
        stamp = f"{result['config_hash']}:{result.get('ended')}"
        if self.logged.get(result["id"]) == stamp:
            return
        config = {k: v for k, v in result["config"].items()
                  if k not in ("id", "hash", "data_root", "cache_dir")}
        config.update(config_hash=result["config_hash"], id=result["id"])
        finished = result["status"] == "finished"
        run = self.wandb.init(
            project=self.project, entity=self.entity, group=self.group,
            job_type=str(result["config"]["scenario"]["name"]), name=result["id"],
            config=config, tags=["lrbench", str(result["config"]["strategy"]),
                                 str(result["status"])],
            reinit="create_new", settings=self.wandb.Settings(silent=True, console="off"))
        try:
            rows = history(result) if finished else {}
            for step, values in rows.items():
                run.log(values, step=step)
            for name, value in (rows[max(rows)] if rows else {}).items():
                if name.startswith("summary."):
                    run.summary[name] = value
            run.summary["status"] = result["status"]
            if not finished:
                run.summary["reason"] = str(result.get("reason", ""))[:5000]
        finally:
            run.finish(exit_code=0 if finished else 1)
        self.logged[result["id"]] = stamp
        atomic_write(self.store / LOGGED, json.dumps(self.logged, indent=1, sort_keys=True))

    def log_store(self, store: Path) -> None:
        """Nothing: W&B runs are per cell (the matrix's files are in the store)."""

    def finish(self, status: str = "FINISHED") -> None:
        """Nothing to close: each cell's run ended when it was logged."""


def open_wandb(tracking: Any, store: str | Path, matrix_name: str,
               warn: Callable[[str], None] | None = None) -> WandbTracker | None:
    """The :class:`WandbTracker` of ``store`` for a ``tracking`` section, or None when
    ``tracking.wandb`` is off; a one-line :class:`LrbenchError` before any training when
    wandb is missing, or when it would need a login it does not have."""
    if not getattr(tracking, "wandb", False):
        return None
    wandb = _import_wandb()
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode not in ("offline", "disabled", "dryrun"):
        try:
            key = wandb.Api(timeout=10).api_key
        except Exception:  # noqa: BLE001 (no key, no settings: the message below says it)
            key = None
        if not key and not os.environ.get("WANDB_API_KEY"):
            raise LrbenchError("W&B tracking needs a login: run 'wandb login' or set "
                               "WANDB_API_KEY, or set WANDB_MODE=offline to write the runs "
                               "here and 'wandb sync' them later")
    return WandbTracker(wandb, tracking.wandb_project or matrix_name, tracking.wandb_entity,
                        Path(store), matrix_name,
                        warn or (lambda msg: print(msg, file=sys.stderr)))
