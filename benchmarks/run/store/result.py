"""The ``result.json`` format, the one place that knows it: a cell's result written
atomically, read back with every field checked (a damaged file is a one-line
:class:`DamagedResult`), and whether a finished result can be reused."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.errors import LrbenchError
from benchmarks.run.store.layout import cell_dir, read_store_text
from metrics.io import (
    NotARegularFile,
    atomic_write,
    keep_aside,
)

if TYPE_CHECKING:
    from benchmarks.config import Cell


# -- result.json ----------------------------------------------------------------------------
class DamagedResult(LrbenchError):
    """A ``result.json`` that is not what lrbench writes (not JSON, not an object, a field
    missing or of the wrong type, a ragged R matrix): one line naming the file and what to
    do. ``lrbench run`` recomputes such a cell (the file kept beside it)."""


def _advice(path: Path) -> str:
    cell = path.parent
    store = cell.parent.parent
    if (store / "matrix.yaml").is_file():
        return (f"recompute it with 'lrbench run {store / 'matrix.yaml'} --out {store}' "
                f"(the damaged file is kept beside it), or delete the folder {str(cell)!r}")
    return f"delete the folder {str(cell)!r} and run its matrix again"


def _number(v: Any) -> bool:
    """None (undefined) or a finite number (JSON's NaN and Infinity are not results)."""
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool)
                         and math.isfinite(v))


def _measure(v: Any) -> bool:
    """None or a finite number in [0, 1]: what every Recall@K and mAP@R is."""
    return _number(v) and (v is None or 0.0 <= v <= 1.0)


def _matrix_problem(name: str, mat: Any, n: int | None) -> str | None:
    """Why ``mat`` is not an n x n R matrix of measures in [0, 1] (None when it is one)."""
    if not isinstance(mat, list) or not all(isinstance(r, list) for r in mat):
        return f"{name} is not a list of rows"
    if len({len(r) for r in mat}) > 1 or (n is not None and (len(mat) != n or any(
            len(r) != n for r in mat))):
        return f"{name} is ragged (rows of {[len(r) for r in mat][:6]} values)"
    if not all(_number(v) for r in mat for v in r):
        return f"{name} holds a value that is not a finite number"
    bad = next((v for r in mat for v in r if not _measure(v)), None)
    if bad is not None:
        return f"{name} holds {bad!r}, outside [0, 1] (a recall or mAP is a fraction)"
    return None


def result_problem(result: Any) -> str | None:
    """What is wrong with a parsed ``result.json`` for the store's readers (the runner's
    skip test and summary, the tidy table, ``reports``), or None when nothing is."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__} instead of an object"
    cfg = result.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("scenario"), dict) or not \
            isinstance(cfg["scenario"].get("name"), str) or not isinstance(
            cfg.get("strategy"), str) or not isinstance(cfg.get("seed"), int):
        return "its config (scenario name, strategy, seed) is missing or malformed"
    if result.get("status") not in ("finished", "failed"):
        return f"status {result.get('status')!r} is neither finished nor failed"
    if result["status"] != "finished":
        return None
    payload = result.get("payload")
    if not isinstance(payload, dict):
        return "a finished cell without its payload"
    n = payload.get("num_experiences")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return "payload.num_experiences is missing or not a positive integer"
    mats = payload.get("r_matrix")
    if not isinstance(mats, dict) or not mats:
        return "payload.r_matrix is missing or not a mapping"
    for metric, by_k in mats.items():
        for k, mat in (by_k.items() if isinstance(by_k, dict) else [("", by_k)]):
            problem = _matrix_problem(f"the R matrix of {metric}{'@' if k else ''}{k}", mat, n)
            if problem:
                return problem
    for metric, by_k in (payload.get("seen") or {}).items() if isinstance(
            payload.get("seen", {}), dict) else [("seen", None)]:
        for k, curve in (by_k.items() if isinstance(by_k, dict) else [("", by_k)]):
            if not isinstance(curve, list) or len(curve) != n or not all(map(_number, curve)):
                return f"the seen curve of {metric}{'@' if k else ''}{k} is malformed"
            bad = next((v for v in curve if not _measure(v)), None)
            if bad is not None:
                return (f"the seen curve of {metric}{'@' if k else ''}{k} holds {bad!r}, "
                        "outside [0, 1] (a recall or mAP is a fraction)")
    summary = payload.get("summary", {})  # the run's headline; reports recompute theirs
    if not isinstance(summary, dict) or not all(
            _number(summary.get(key)) for key in ("final_mean", "forgetting", "final_seen")):
        return "payload.summary is of the wrong type"
    for key in ("losses", "timings", "cross_model"):
        if not isinstance(payload.get(key) or {}, dict):
            return f"payload.{key} is not a mapping"
    for k, mat in (payload.get("cross_model") or {}).items():
        problem = _matrix_problem(f"the cross-model matrix of recall@{k}", mat, n)
        if problem:
            return problem
    return None


def read_result(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A cell's ``result.json``, parsed and checked; None when there is no such file.

    A file that cannot be read raises ``OSError``; one that is not what lrbench writes
    (not JSON, or :func:`result_problem` finds a fault) raises :class:`DamagedResult`, one
    line naming the file and what to do.
    """
    path = Path(path)
    try:  # a folder, a FIFO, /dev/zero in its place: damaged, never opened as a file
        text = read_store_text(path, "result")
    except NotARegularFile as exc:
        what = str(exc).split(": this result ", 1)[-1].split(";")[0]
        raise DamagedResult(f"{path}: damaged result (it {what}); {_advice(path)}") from None
    except LrbenchError:
        text = "\0"  # not UTF-8
    if text is None:
        return None
    try:
        result = json.loads(text)
    except ValueError as exc:
        raise DamagedResult(f"{path}: damaged result (not JSON: {exc}); {_advice(path)}"
                            ) from None
    problem = result_problem(result)
    if problem:
        raise DamagedResult(f"{path}: damaged result ({problem}); {_advice(path)}")
    return dict(result)


def set_aside(path: Path) -> Path:
    """Move a damaged ``result.json`` aside (``result.json.damaged``) before its cell is
    recomputed: nothing is lost, and the readers see only the new result."""
    return keep_aside(path, "damaged")


def replaced_result(path: Path, cell: Cell) -> Path | None:
    """Keep a copy of a finished ``result.json`` of another config (another hash for the
    same cell id: ``--resume`` with a changed matrix, a changed lrbench) before its cell is
    recomputed: renamed to ``result.json.replaced`` (``.replaced2``...), out of every
    table; returns where, or None when there is nothing such to keep."""
    try:
        result = read_result(path)
    except (OSError, DamagedResult):
        return None
    if result is None or result.get("status") != "finished" or \
            result.get("config_hash") == cell.hash:
        return None
    return keep_aside(path, "replaced")


#: the label of a cell whose ``result.json`` records no CPU (written before lrbench did)
UNRECORDED = "unrecorded"


def machine_label(host: object) -> str:
    """A cell's CPU from its ``result.json``'s ``host``
    (:func:`benchmarks.run.provenance.machine`): ``model (instruction set, flags HASH)``
    and any variable that narrowed the instruction set, or :data:`UNRECORDED`. What the
    report and ``--check-determinism`` name: cells of two labels are comparable only to
    within rounding (and one label does not promise equal rounding: the recomputed cell
    of ``--check-determinism`` is the test)."""
    if not isinstance(host, dict) or not host.get("cpu"):
        return UNRECORDED
    parts = [str(host.get("cpu_capability", "?"))]
    if host.get("cpu_flags"):
        parts.append(f"flags {host['cpu_flags']}")
    parts += [f"{k}={v}" for k, v in sorted((host.get("isa_env") or {}).items())]
    return f"{host['cpu']} ({', '.join(parts)})"


def write_result(store: Path, cell: Cell, outcome: dict[str, Any], started: float,
                 versions: dict[str, str], host: dict[str, Any]) -> Path | None:
    """Write one cell's ``log.txt`` and ``result.json`` from its worker's ``outcome``
    (``status`` finished with a ``payload``, or failed with a ``reason``; its ``log``).
    ``started`` is the worker's own start time where the outcome has one (a queued cell
    starts long after its submission), else the ``started`` the executor passes.

    A finished result of another config there (``--resume`` with a changed matrix) is
    never overwritten: it is kept (:func:`replaced_result`), and where is returned."""
    from benchmarks.config import HASH_VERSION

    folder = cell_dir(store, cell)
    from strategies import get_strategy

    result = {"id": cell.id, "config_hash": cell.hash,
              "hash_version": HASH_VERSION, "config": cell.as_dict(),
              "status": outcome["status"], "started": outcome.get("started", started),
              "ended": time.time(), "versions": versions, "host": host,
              "strategy_plugin": get_strategy(cell.plugin_name).provenance()}
    if outcome["status"] == "finished":
        result["payload"] = outcome["payload"]
    else:
        result["reason"] = outcome["reason"]
    kept = replaced_result(folder / "result.json", cell)
    atomic_write(folder / "log.txt", "\n".join(outcome["log"]) + "\n")
    atomic_write(folder / "result.json", json.dumps(result, indent=1))
    return kept


def finished_result(cell_dir: Path, cell: Cell) -> tuple[dict[str, Any] | None, str]:
    """The finished result of exactly this cell config in ``cell_dir``, or None and why
    there is none (no file, unreadable, not finished, another config)."""
    try:
        result = read_result(cell_dir / "result.json")
    except (OSError, DamagedResult) as exc:
        return None, f"its result.json cannot be read ({type(exc).__name__})"
    if result is None:
        return None, "it holds no result.json for the cell"
    if result.get("status") != "finished":
        return None, "its result of the cell is not finished"
    if result.get("config_hash") != cell.hash:
        return None, "its result of the cell is of another config"
    return result, ""


def finished(cell_dir: Path, cell: Cell,
             older: Callable[[str], bool] | None = None) -> bool:
    """Whether ``cell_dir`` holds a finished result of exactly this cell config (and, with
    ``older``, one whose lrbench commit ``older`` does not call too old)."""
    result, _ = finished_result(cell_dir, cell)
    if result is None:
        return False
    if older is not None:
        commit = (result.get("versions") or {}).get("lrbench_commit", "unknown")
        return not older(str(commit))
    return True


def older_than(commit: str) -> Callable[[str], bool]:
    """A test for "computed by an lrbench commit older than ``commit``": an ancestor of
    it in this repository's history, or a commit git cannot place (unknown, another
    history). A one-line error when ``commit`` itself is not a commit here."""
    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)

    try:
        found = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except OSError:
        raise LrbenchError("--rerun-before needs git and lrbench's git checkout") from None
    if found.returncode != 0:
        raise LrbenchError(f"--rerun-before: {commit!r} is not a commit of lrbench's "
                           f"repository ({repo}); give a commit id or tag from git log")
    target = found.stdout.strip()

    def older(cell_commit: str) -> bool:
        if cell_commit == target:
            return False
        if git("cat-file", "-e", f"{cell_commit}^{{commit}}").returncode != 0:
            return True  # unknown here: its age cannot be told, so it is recomputed
        return git("merge-base", "--is-ancestor", cell_commit, target).returncode == 0

    return older


