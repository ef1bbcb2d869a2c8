"""MLflow tracking of a matrix run: one parent run per matrix (per results store), one child
run per cell.

Everything is logged by the process that owns the store, from the ``result.json`` just
written (or already there, for a cell a rerun skips), so tracking works the same under
every executor, can never change a number, and MLflow's runs equal the store's values.
A child run holds:

* parameters: the cell's resolved config, flattened (``training.lr``, ``hparams.lam``,
  ``scenario.name``, ...), its ``config_hash`` and ``id``;
* step series, the step being the experience just trained: ``seen.recall_at_K`` and
  ``seen.map_at_r`` (the union-of-seen gallery), ``taskJ.recall_at_K`` and
  ``taskJ.map_at_r`` (row i of the R matrix: task J's gallery after experience i, zero-shot
  entries included), ``loss.<term>`` and ``steps``;
* the summaries (``summary.final_seen``, ``summary.forgetting``, ...; a per-task list as
  ``summary.<name>.taskJ``) at the last step;
* artifacts: the cell's ``result.json`` and ``log.txt``.

The parent run holds the matrix's ``matrix.yaml``, ``results.csv`` and, when the store has
one, its ``report/`` folder (``lrbench report`` attaches it too when it writes it). A rerun
finds its parent again (tag ``lrbench.store``) and logs only the cells not yet logged with
the same result, so runs are never duplicated and a tracking failure is repaired by
rerunning the command.

A URI that cannot be used is a one-line :class:`LrbenchError` before any training
(:func:`open_tracker`); a failure while the matrix runs is a one-line warning and tracking
stops, never a lost result.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.errors import LrbenchError
from benchmarks.run.track_values import (  # noqa: F401 (re-exported)
    _flatten,
    _name,
    _series,
    cell_metrics,
    cell_params,
)
from metrics.io import check_writable

#: where tracking goes when it is enabled without a URI (a folder, as MLflow's own default)
DEFAULT_URI = "mlruns"
STORE_TAG = "lrbench.store"
CELL_TAG = "lrbench.cell"
RESULT_TAG = "lrbench.result"
PARENT_TAG = "mlflow.parentRunId"
_BATCH = 100  # MLflow's limit on params (and tags) per log_batch call


def resolve_uri(uri: str | None) -> tuple[str, Path | None]:
    """``(MLflow tracking URI, artifact folder or None)`` for a configured ``uri``.

    A plain folder (the default ``mlruns``) becomes ``sqlite:///<folder>/mlflow.db`` with
    artifacts in ``<folder>/artifacts``: MLflow's own file store is in maintenance mode
    (MLflow 3 refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is set), SQLite is its local
    default. Any other URI (``sqlite:``, ``http(s):``, ``postgresql:`` ...) goes as given.
    """
    uri = uri or DEFAULT_URI
    if "://" in uri or uri.startswith("file:"):
        return uri, None
    folder = Path(uri).expanduser().resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class Tracker:
    """The MLflow parent run of one results store, and its child runs (one per cell)."""

    def __init__(self, client: Any, uri: str, experiment_id: str, store: str,
                 matrix_name: str, warn: Callable[[str], None]) -> None:
        self.client, self.uri, self.experiment_id = client, uri, experiment_id
        self.store, self.matrix_name, self.warn = store, matrix_name, warn
        self.parent_id: str | None = None
        self.children: dict[str, Any] = {}
        self.broken = False

    def find_parent(self) -> str | None:
        """The id of this store's parent run (the latest, tag ``lrbench.store``), or None."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{STORE_TAG}` = '{self.store}'",
            max_results=1, order_by=["attributes.start_time DESC"])
        return found[0].info.run_id if found else None

    def start(self) -> None:
        """Find this store's parent run again (marked running) or create it, and the
        children it already has; called by the runner once it holds the store."""
        def start() -> None:
            parent = self.find_parent()
            if parent is None:
                parent = self.client.create_run(
                    self.experiment_id, run_name=self.matrix_name,
                    tags={STORE_TAG: self.store, "lrbench.matrix": self.matrix_name}
                ).info.run_id
            else:
                self.client.update_run(parent, status="RUNNING")
            runs = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'",
                max_results=50000)
            self.children = {r.data.tags[CELL_TAG]: r for r in runs
                             if r.data.tags.get(CELL_TAG)}
            self.parent_id = parent

        self._guard("the parent run", start)

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        """Run a logging ``action``; a failure warns once (one line) and stops tracking."""
        if self.broken:
            return
        try:
            action()
        except Exception as exc:  # the store has every result: tracking must not lose one
            self.broken = True
            self.warn(f"lrbench: warning: MLflow tracking stopped ({what}: {_one_line(exc)}); "
                      "every result is in the store: rerun the same command to log the "
                      "missing runs")

    def log_cell(self, result_path: Path) -> None:
        """Log one cell's ``result.json`` (just written, or kept from an earlier run) as a
        child run, unless a child with this very result is already there."""
        self._guard(f"cell {result_path.parent.name}", lambda: self._log_cell(result_path))

    def _log_cell(self, result_path: Path) -> None:
        from mlflow.entities import Metric, Param, RunTag

        from benchmarks.run.store import read_result

        result = read_result(result_path)
        if result is None:
            return
        stamp = f"{result['config_hash']}:{result.get('ended')}"
        old = self.children.get(result["id"])
        if old is not None and old.data.tags.get(RESULT_TAG) == stamp:
            return
        if old is not None:  # recomputed (--force, another hash): the new result replaces it
            self.client.delete_run(old.info.run_id)
        run = self.client.create_run(
            self.experiment_id, run_name=result["id"],
            start_time=int(1000 * result.get("started", 0)) or None,
            tags={PARENT_TAG: self.parent_id, CELL_TAG: result["id"], RESULT_TAG: stamp,
                  "lrbench.status": result["status"]})
        rid = run.info.run_id
        params = [Param(k, v) for k, v in cell_params(result).items()]
        stamp_ms = int(1000 * result.get("ended", 0))
        metrics = [Metric(n, v, stamp_ms, s) for n, v, s in cell_metrics(result)] \
            if result["status"] == "finished" else []
        for i in range(0, len(params), _BATCH):
            self.client.log_batch(rid, params=params[i:i + _BATCH])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(rid, metrics=metrics[i:i + 1000])
        if result["status"] != "finished":
            self.client.log_batch(rid, tags=[RunTag("lrbench.reason",
                                                    str(result.get("reason", ""))[:5000])])
        for name in ("result.json", "log.txt"):
            if (result_path.parent / name).is_file():
                self.client.log_artifact(rid, str(result_path.parent / name))
        self.client.set_terminated(rid, "FINISHED" if result["status"] == "finished"
                                   else "FAILED", end_time=stamp_ms or None)
        self.children[result["id"]] = self.client.get_run(rid)

    def log_store(self, store: Path) -> None:
        """Attach the store's ``matrix.yaml``, ``results.csv`` and ``report/`` (if any)
        to the parent run."""
        def attach() -> None:
            for name in ("matrix.yaml", "results.csv"):
                if (store / name).is_file():
                    self.client.log_artifact(self.parent_id, str(store / name))
            if (store / "report").is_dir():
                self.client.log_artifacts(self.parent_id, str(store / "report"), "report")

        self._guard("the matrix's files", attach)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run ended (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        self._guard("closing the parent run",
                    lambda: self.client.set_terminated(self.parent_id, status))


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise LrbenchError("MLflow tracking needs MLflow: pip install 'lrbench[mlflow]' (or "
                           "turn tracking off)") from None
    return mlflow


def _quiet_mlflow() -> None:
    # MLflow retries a failing HTTP call for minutes by default; an unreachable server
    # should be a one-line error at once (a user's own settings are kept); and its INFO
    # lines (creating database tables) would mix with lrbench's own on stderr
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Trackers:
    """Several trackers (MLflow's and W&B's) behind one tracker's interface."""

    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers

    def start(self) -> None:
        """Start every tracker."""
        for t in self.trackers:
            t.start()

    def log_cell(self, result_path: Path) -> None:
        """Log one cell's result to every tracker."""
        for t in self.trackers:
            t.log_cell(result_path)

    def log_store(self, store: Path) -> None:
        """Attach the store's files wherever a tracker keeps them."""
        for t in self.trackers:
            t.log_store(store)

    def finish(self, status: str = "FINISHED") -> None:
        """End every tracker's run."""
        for t in self.trackers:
            t.finish(status)


def open_tracker(tracking: Any, store: str | Path, matrix_name: str,
                 warn: Callable[[str], None] | None = None) -> Any:
    """The trackers of ``store`` for a ``tracking`` section
    (:class:`~benchmarks.config.TrackingSpec`): MLflow's :class:`Tracker` with ``mlflow``,
    W&B's (:mod:`benchmarks.run.wandb_tracking`) with ``wandb``, both behind one interface
    (:class:`Trackers`) with both, None when tracking is off; each is checked before any
    training."""
    from benchmarks.run.wandb_tracking import open_wandb

    found = [t for t in (open_mlflow(tracking, store, matrix_name, warn),
                         open_wandb(tracking, store, matrix_name, warn)) if t is not None]
    if not found:
        return None
    return found[0] if len(found) == 1 else Trackers(found)


def open_mlflow(tracking: Any, store: str | Path, matrix_name: str,
                warn: Callable[[str], None] | None = None) -> Tracker | None:
    """The MLflow :class:`Tracker` of ``store`` for a ``tracking`` section, or None when
    ``tracking.mlflow`` is off.

    Checks everything before any training: MLflow installed, the URI usable (its folder
    writable, its server reachable), the experiment there or created; every problem is a
    one-line :class:`LrbenchError`. The parent run is found or created later, by
    :meth:`Tracker.start`, once the runner holds the store."""
    if not tracking.mlflow:
        return None
    _import_mlflow()
    _quiet_mlflow()
    from mlflow import MlflowClient

    uri, artifacts = resolve_uri(tracking.uri)
    shown = tracking.uri or DEFAULT_URI
    hint = ("give a folder (default mlruns), sqlite:///PATH or the http(s):// address of an "
            "MLflow server as --tracking-uri or tracking.uri")
    if artifacts is not None:
        try:
            check_writable(artifacts.parent)  # mlflow.db goes there
            artifacts.mkdir(exist_ok=True)
        except OSError as exc:
            raise LrbenchError(f"cannot write the MLflow tracking folder {shown!r} "
                               f"({exc.strerror}); {hint}") from None
    name = tracking.experiment or matrix_name
    store_key = str(Path(store).resolve())
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            exp_id = client.create_experiment(
                name, artifact_location=None if artifacts is None else artifacts.as_uri())
        elif exp.lifecycle_stage != "active":
            raise LrbenchError(f"MLflow experiment {name!r} at {shown!r} is deleted; restore "
                               "it (mlflow experiments restore) or set tracking.experiment")
        else:
            exp_id = exp.experiment_id
        tracker = Tracker(client, uri, exp_id, store_key, matrix_name,
                          warn or (lambda msg: print(msg, file=sys.stderr)))
        tracker.find_parent()  # the store answers a query, not only a lookup by name
        return tracker
    except LrbenchError:
        raise
    except Exception as exc:  # MLflow's own: unknown scheme, unreachable server, bad db
        raise LrbenchError(f"MLflow tracking URI {shown!r} is not usable ({_one_line(exc)}); "
                           f"{hint}") from None


def attach_report(store: Path, report: Path,
                  warn: Callable[[str], None] | None = None) -> bool:
    """Log a report folder written by ``lrbench report`` as ``report/`` of ``store``'s
    parent run, when the store's matrix tracks to MLflow and its parent run exists (a
    relative ``tracking.uri`` is read from the working folder, as when the matrix ran).
    Returns whether it was logged; a tracking problem is a one-line warning: the report
    itself is written."""
    from pydantic import ValidationError

    from benchmarks.config import TrackingSpec
    from benchmarks.run.store import read_matrix

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    data = read_matrix(store) or {}
    try:
        tracking = TrackingSpec.model_validate(data.get("tracking") or {})
    except ValidationError:  # edited by hand: nothing to attach to
        return False
    if not tracking.mlflow:
        return False
    _, artifacts = resolve_uri(tracking.uri)
    if artifacts is not None and not (artifacts.parent / "mlflow.db").is_file():
        return False  # no local store here (report run from another folder): create none
    try:
        tracker = open_mlflow(tracking, store, str(data.get("name")), warn)
        parent = None if tracker is None else tracker.find_parent()
    except LrbenchError as exc:
        warn(f"lrbench: warning: the report was not logged to MLflow: {exc}")
        return False
    except Exception as exc:  # the store answered the checks, then failed
        warn(f"lrbench: warning: the report was not logged to MLflow: {_one_line(exc)}")
        return False
    if tracker is None or parent is None:
        return False
    tracker._guard("the report", lambda: tracker.client.log_artifacts(
        parent, str(report), "report"))
    return not tracker.broken
