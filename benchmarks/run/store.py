"""The results store: its folder layout and the ``result.json`` format, read and written.

Every file of a store is read and written here, and only here (DESIGN.md, "Results store";
``reports`` reads stores through :func:`read_result` and :func:`current_cells`)::

    results/<name>/
      matrix.yaml                       the resolved matrix
      cells.json                        the current matrix's cells: id -> config hash
      skipped.json                      broken images left out (only with --skip-corrupt)
      results.csv, results.parquet      tidy long table of every finished cell
      cells/<scenario>__<strategy>__seed<k>/
        result.json                     config, status, R matrices, timings, versions, host
        log.txt                         the cell's log (a failure's traceback too)
        checkpoint.pt                   only with --checkpoints
      first/<key>.pt                    a first experience shared by cells that differ only
                                        in hyperparameters inactive there (during a run)
      submitit/                         submitit's job pickles and logs (--executor submitit)

Every file is written through :func:`atomic_write` (a temporary file in the same folder,
flushed to disk, then renamed over the target), so an interrupted run never leaves half a
file, and the next run removes the temporary files it left (:func:`clean_temporary`); a
rerun skips cells whose ``result.json`` is finished with the same config hash
(:func:`finished`). :func:`read_result` checks what it reads: a damaged file is a
one-line :class:`DamagedResult` naming it and the command that recomputes it. Cells that
are not cells of the current matrix (:func:`stale_cells`, :func:`current_cells`; left by
``--resume`` with a changed matrix) stay on disk, out of every table.
:func:`store_lock` holds the store for one runner:

* an operating-system lock (``filelock``) on ``<store>/.lock`` excludes every other process
  of this host at once, even under a race, and is released by the kernel if the holder
  dies (``kill -9``): a stale lock cannot exist on one host;
* the holder is recorded in ``<store>/.lock.owner`` (``pid host``, written atomically
  while the OS lock is held, so nobody reads it half-written). The record is verified
  against the OS lock, never trusted: a runner that holds the OS lock knows that no other
  runner of this host holds the store, so a record naming this host (a killed run's, a
  reused pid, a damaged record) is stale and replaced. On a shared disk whose file locks
  do not reach across hosts, the record still keeps a runner of another host out: a
  holder on another host is never taken for stale, since its pid cannot be checked from
  here; the message names the host and the file to delete if that run is dead;
* release removes the owner record only when it is this process's own.

Every file of a store is opened only once it is known to be a regular file of bounded
size (``metrics.io.read_regular``): a folder, a FIFO or a symbolic link to ``/dev/zero`` in
place of one is a one-line error naming it (:func:`check_layout`, before any training), or
for a ``result.json`` a damaged result, set aside and recomputed.

The process that holds the lock is the only writer of the store: cells' results come back
to it from wherever they ran. Nothing here imports torch, Avalanche or the strategies.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from benchmarks.errors import LrbenchError
from metrics.io import (
    NotARegularFile,
    atomic_write,
    check_regular,
    check_writable,
    keep_aside,
    read_regular,
)

if TYPE_CHECKING:
    from benchmarks.config import Cell, MatrixConfig

#: the columns of ``results.csv`` and ``results.parquet``
TIDY_COLUMNS = ["scenario", "strategy", "seed", "train_exp", "eval_exp", "metric", "k", "value"]


def hostname() -> str:
    """This host's name, as the lock records it."""
    return socket.gethostname()


#: the largest file of a store that is read (a result.json of a long stream is a few MB)
MAX_STORE_FILE = 256 * 2**20


def read_store_text(path: Path, what: str | None = None) -> str | None:
    """The text of one file of a store, None when there is none; a one-line
    ``LrbenchError`` naming it when something else is there (a folder, a FIFO, a device,
    a symbolic link loop: ``metrics.io.read_regular``) or it is not UTF-8 text.
    ``OSError`` when it cannot be read (permissions)."""
    what = what or f"store's {path.name}"
    try:
        raw = read_regular(path, MAX_STORE_FILE, what)
    except FileNotFoundError:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LrbenchError(f"{str(path)!r}: this {what} is not UTF-8 text (byte {exc.start}); "
                           "it is not a file lrbench wrote: remove or rename it") from None


def _owner(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of the recorded holder, or None (no record, or a damaged one)."""
    try:
        pid, host = (read_store_text(path, "lock owner record") or "").split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):  # NotARegularFile is refused before: check_lock_files
        return None


def check_lock_files(store: Path) -> None:
    """Refuse a ``.lock`` or ``.lock.owner`` of ``store`` that is not a regular file (a
    folder, a FIFO, a symbolic link loop): one line naming it, before the lock is taken."""
    for name, what in ((".lock", "lock file"), (".lock.owner", "lock owner record")):
        path = store / name
        if os.path.isdir(path):
            raise LrbenchError(f"{str(path)!r} is a folder, not lrbench's {what}; remove it "
                               "and run again")
        check_regular(path, what, "remove it and run again")


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold ``store`` for this runner; a live holder is a one-line ``LrbenchError``.

    The OS lock decides: once this process holds it, no other runner of this host holds
    the store, so an owner record naming this host is stale (a run killed with ``kill -9``
    whose pid was reused since, a damaged record) and is replaced. Only a record of
    another host, whose runner the OS lock may not reach (a shared disk), keeps it out."""
    store = Path(store)
    owner_file = store / ".lock.owner"
    check_lock_files(store)
    lock = FileLock(store / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:  # (a TimeoutError, so an OSError: caught first)
        held = _owner(owner_file)
        who = f" (pid {held[0]} on {held[1]})" if held else ""
        gone = ""
        if held and held[1] != hostname():  # its pid cannot be checked from this host
            gone = (f"; if host {held[1]!r} is gone for good, delete "
                    f"{str(store / '.lock')!r} and {str(owner_file)!r} and run again")
        raise LrbenchError(f"results store {str(store)!r} is in use by another lrbench run"
                           f"{who}; wait for it to finish or choose another --out{gone}"
                           ) from None
    except OSError as exc:
        raise LrbenchError(f"{str(store / '.lock')!r}: lrbench's lock file cannot be opened "
                           f"({exc.strerror or exc}); remove it and run again") from None
    me = f"{os.getpid()} {hostname()}"
    try:
        held = _owner(owner_file)
        if held is not None:
            pid, host = held
            if host != hostname():
                raise LrbenchError(
                    f"results store {str(store)!r} is held by an lrbench run on host {host!r} "
                    f"(pid {pid}); wait for it to finish, or if that run is dead delete "
                    f"{str(owner_file)!r}, or choose another --out")
            # this host's record, but the OS lock is ours: no runner of this host holds the
            # store (whatever process has that pid now), so the record is stale
        atomic_write(owner_file, me + "\n")  # a stale or damaged record: replaced
        try:
            yield
        finally:
            if _owner(owner_file) == (os.getpid(), hostname()):
                with suppress(OSError):
                    owner_file.unlink()
    finally:
        lock.release()


def lock_free(store: Path) -> bool:
    """Whether no runner holds ``store``: its OS lock can be taken and no owner record of
    another host is there (a record of this host with the OS lock free is stale)."""
    lock = FileLock(Path(store) / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    held = _owner(Path(store) / ".lock.owner")
    return held is None or held[1] == hostname()


# -- the store's folder ---------------------------------------------------------------------
def prepare_store(out: str | Path, config: MatrixConfig, force: bool = False,
                  resume: bool = False) -> Path:
    """The results folder, created and checked writable, and not holding another matrix
    (unless ``force`` or ``resume``); a one-line ``LrbenchError`` otherwise."""
    store = Path(out)
    try:
        check_writable(store)
    except OSError as exc:
        raise LrbenchError(f"cannot write to results folder {str(store)!r} ({exc.strerror}); "
                           "fix its permissions or choose another --out") from None
    check_layout(store, config)
    check_store(store, config, force, resume)
    return store


#: the files at the top of a store (each a regular file when present) and its folders
STORE_FILES = ("matrix.yaml", "cells.json", "skipped.json", "results.csv", "results.parquet")
STORE_FOLDERS = ("cells", "first")
#: the files of one cell's folder that a run writes
CELL_FILES = ("log.txt", "checkpoint.pt")


def check_layout(store: Path, config: MatrixConfig | None = None) -> None:
    """Refuse, before any training, a store whose files a run would write over are not
    files (a folder in place of ``results.csv``, a FIFO for ``matrix.yaml``, a symbolic
    link loop for ``.lock``), whose folders are not folders (``cells`` a file), or whose
    cell folders of ``config`` are not folders or hold such a file: one line naming it.
    (A ``result.json`` that is not a regular file is a damaged result: set aside and
    recomputed, :func:`read_result`.)"""
    store = Path(store)
    fix = "remove or rename it (it is not what lrbench writes there) and run again"
    check_lock_files(store)
    for name in STORE_FILES:
        check_regular(store / name, f"store's {name}", fix)
    folders = [store / name for name in STORE_FOLDERS]
    if config is not None:
        folders += [store / "cells" / cid for cid in config_cell_ids(config)]
    for folder in folders:
        if os.path.lexists(folder) and not folder.is_dir():
            kind = "a file" if folder.is_file() else "not a folder"
            raise LrbenchError(f"{str(folder)!r} is {kind}, where the store keeps a folder; "
                               f"{fix}")
        if folder.parent.name == "cells" and folder.is_dir():
            for name in CELL_FILES:
                check_regular(folder / name, f"cell's {name}", fix)


def config_cell_ids(config: MatrixConfig) -> list[str]:
    """The cell ids of ``config`` (``<scenario>__<label>__seed<k>``, as
    :func:`benchmarks.config.expand_cells` names them), without the registries."""
    return [f"{sc.name}__{st}__seed{seed}" for sc in config.scenarios
            for st in config.strategies for seed in config.seeds]


def _yaml(text: str, source: str) -> Any:
    """A store's YAML text through lrbench's one YAML reader (its bounds: an alias bomb
    in a ``matrix.yaml`` is a one-line error, not gigabytes)."""
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str) -> Any:
    """:func:`benchmarks.config.parse_yaml`, lrbench's one YAML reader, for the packages
    that read stores only through this module (``reports``)."""
    from benchmarks.config import parse_yaml as parse

    return parse(text, source)


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """:func:`benchmarks.config.read_yaml` (a claims file, a store's ``matrix.yaml``), for
    the packages that read files only through this module (``reports``)."""
    from benchmarks.config import read_yaml as read

    return read(path, what)


def same_matrix(stored: str, config: MatrixConfig) -> bool:
    """Whether a store's ``matrix.yaml`` is ``config``: compared once both are resolved
    with today's defaults, so a setting added to lrbench since the store was written does
    not make it "another matrix" (its cells' hashes still decide what reruns), and without
    the sections that change no number (tracking, SLURM resources)."""
    from benchmarks.config import parse_config, resolved_yaml

    if stored == resolved_yaml(config):
        return True
    try:
        old = parse_config(_yaml(stored, "matrix.yaml"), "matrix.yaml", registries=False)
    except (LrbenchError, TypeError, ValueError):
        return False
    # tracking and SLURM settings change no number: a rerun may switch them
    return resolved_yaml(old, run_only=False) == resolved_yaml(config, run_only=False)


def matrix_difference(stored: str, config: MatrixConfig) -> str:
    """The first setting where a store's ``matrix.yaml`` and ``config`` differ, as
    ``key.path: old -> new`` (compared resolved, as :func:`same_matrix` does)."""
    from benchmarks.config import RUN_ONLY_SECTIONS, parse_config

    skip = set(RUN_ONLY_SECTIONS)  # they never make a store "another matrix"
    new = config.model_dump(mode="json", exclude=skip)
    try:
        old = parse_config(_yaml(stored, "matrix.yaml"), "matrix.yaml", registries=False
                           ).model_dump(mode="json", exclude=skip)
    except (LrbenchError, TypeError, ValueError):
        return "its matrix.yaml is not a matrix this lrbench reads"

    def first(a: Any, b: Any, path: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                found = first(a.get(key, "<absent>"), b.get(key, "<absent>"),
                              f"{path}.{key}" if path else str(key))
                if found:
                    return found
            return None
        if a != b:
            return f"{path}: {json.dumps(a, default=str)[:60]} -> {json.dumps(b, default=str)[:60]}"
        return None

    return first(old, new, "") or "its resolved text"


def check_store(store: Path, config: MatrixConfig, force: bool, resume: bool) -> None:
    """Refuse a store that holds a different matrix unless told to overwrite or resume;
    the refusal names the first differing setting."""
    if force and resume:
        raise LrbenchError("--resume and --force contradict each other: --resume keeps the "
                           "finished cells that still match, --force recomputes every cell; "
                           "give one of them")
    existing = store / "matrix.yaml"
    stored = read_store_text(existing) if not (force or resume) else None
    if stored is not None:
        _yaml(stored, str(existing))  # within the YAML reader's bounds, or one line
        if not same_matrix(stored, config):
            raise LrbenchError(
                f"{str(store)!r} holds a different matrix ({matrix_difference(stored, config)}"
                "); use --resume to keep its finished cells that still match, --force to "
                "start over, or another --out")


def read_matrix(store: Path) -> dict[str, Any] | None:
    """A store's ``matrix.yaml`` as a raw mapping; None when it is missing or unreadable."""
    try:
        text = read_store_text(Path(store) / "matrix.yaml")
        data = _yaml(text, str(Path(store) / "matrix.yaml")) if text else None
    except (OSError, LrbenchError):
        return None
    return data if isinstance(data, dict) else None


def write_matrix(store: Path, config: MatrixConfig, cells: list[Cell] | None = None) -> None:
    """Record the resolved matrix in ``matrix.yaml`` and its ``cells`` (id -> config hash)
    in ``cells.json``: what the report counts as current (:func:`current_cells`)."""
    from benchmarks.config import resolved_yaml

    atomic_write(store / "matrix.yaml", resolved_yaml(config))
    if cells is not None:
        atomic_write(store / "cells.json", json.dumps({c.id: c.hash for c in cells},
                                                      indent=1, sort_keys=True))


def current_cells(store: Path) -> dict[str, str | None] | None:
    """The current matrix's cells of ``store``: id -> config hash, from ``cells.json``
    (written by each run); for a store written before it, the ids of ``matrix.yaml`` with
    no hash (:func:`matrix_cell_ids`); None when neither can be read (every cell counts as
    current). A result whose id is absent, or whose hash differs, is stale.

    A ``cells.json`` that is not what lrbench writes (not JSON, not a non-empty mapping of
    ids to hashes: ``{}`` would make every finished cell stale) is a one-line error naming
    it; so is a ``matrix.yaml`` past the YAML reader's bounds."""
    path = Path(store) / "cells.json"
    text = read_store_text(path)
    if text is not None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not (isinstance(data, dict) and data and all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items())):
            what = "an empty mapping" if data == {} else "not a mapping of cell ids to hashes"
            raise LrbenchError(
                f"{str(path)!r}: damaged ({what}; lrbench writes there every cell of the "
                f"store's matrix); rewrite it with 'lrbench run {Path(store) / 'matrix.yaml'} "
                f"--out {store}' (finished cells are kept), or delete it")
        return dict(data)
    try:
        text = read_store_text(Path(store) / "matrix.yaml")
    except OSError:
        return None
    ids = matrix_cell_ids(text, str(Path(store) / "matrix.yaml"))
    return None if ids is None else dict.fromkeys(ids)


def write_skipped(store: Path, broken: dict[str, list[tuple[str, str]]]) -> None:
    """Record the ``broken`` files left out in ``skipped.json`` (removed when none)."""
    if broken:
        atomic_write(store / "skipped.json", json.dumps(
            {name: [{"path": p, "reason": why} for p, why in bad]
             for name, bad in sorted(broken.items())}, indent=1))
    else:
        (store / "skipped.json").unlink(missing_ok=True)


def read_skipped(store: Path) -> dict[str, list[tuple[str, str]]]:
    """The broken files a run left out (``skipped.json``, written by :func:`write_skipped`);
    empty when there is none or it cannot be read."""
    try:
        data = json.loads(read_store_text(Path(store) / "skipped.json") or "{}")
        return {str(name): [(str(f["path"]), str(f["reason"])) for f in files]
                for name, files in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def cell_dir(store: Path, cell: Cell) -> Path:
    """The folder of one cell in ``store``."""
    return store / "cells" / cell.id


def first_experience_path(store: Path, key: str) -> Path:
    """Where the cells with first-experience key ``key`` share that experience's
    checkpoint (:attr:`~benchmarks.config.Cell.first_experience_key`)."""
    return store / "first" / f"{key}.pt"


def remove_first_experiences(store: Path, keys: Iterable[str] | None = None) -> None:
    """Remove the shared first-experience checkpoints of ``keys`` (None: all of them),
    and their folder once empty: they only speed up a run, and are large."""
    folder = store / "first"
    paths = folder.glob("*.pt") if keys is None else (
        first_experience_path(store, k) for k in keys)
    for path in paths:
        with suppress(IsADirectoryError):  # not one of ours: left alone
            path.unlink(missing_ok=True)
    with suppress(OSError):
        folder.rmdir()


def result_path(store: Path, cell: Cell) -> Path:
    """One cell's ``result.json`` in ``store`` (read it with :func:`read_result`)."""
    return cell_dir(store, cell) / "result.json"


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


def write_result(store: Path, cell: Cell, outcome: dict[str, Any], started: float,
                 versions: dict[str, str], host: dict[str, Any]) -> Path | None:
    """Write one cell's ``log.txt`` and ``result.json`` from its worker's ``outcome``
    (``status`` finished with a ``payload``, or failed with a ``reason``; its ``log``).

    A finished result of another config there (``--resume`` with a changed matrix) is
    never overwritten: it is kept (:func:`replaced_result`), and where is returned."""
    from benchmarks.config import HASH_VERSION

    folder = cell_dir(store, cell)
    from strategies import get_strategy

    result = {"id": cell.id, "config_hash": cell.hash,
              "hash_version": HASH_VERSION, "config": cell.as_dict(),
              "status": outcome["status"], "started": started,
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


def finished(cell_dir: Path, cell: Cell,
             older: Callable[[str], bool] | None = None) -> bool:
    """Whether ``cell_dir`` holds a finished result of exactly this cell config (and, with
    ``older``, one whose lrbench commit ``older`` does not call too old)."""
    try:
        result = read_result(cell_dir / "result.json")
    except (OSError, DamagedResult):
        return False
    if result is None:
        return False
    ok = result.get("status") == "finished" and result.get("config_hash") == cell.hash
    if ok and older is not None:
        commit = (result.get("versions") or {}).get("lrbench_commit", "unknown")
        ok = not older(str(commit))
    return ok


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


# -- the tidy table -------------------------------------------------------------------------
def tidy_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The long-table rows of one finished cell."""
    cell, payload = result["config"], result["payload"]
    base = {"scenario": cell["scenario"]["name"], "strategy": cell["strategy"],
            "seed": cell["seed"]}
    rows = []
    for metric, by_k in payload["r_matrix"].items():
        mats = by_k.items() if isinstance(by_k, dict) else [("", by_k)]
        for k, mat in mats:
            for i, row in enumerate(mat):
                for j, v in enumerate(row):
                    if v is not None:
                        rows.append({**base, "train_exp": i, "eval_exp": j, "metric": metric,
                                     "k": k, "value": v})
    for name, values in payload.get("losses", {}).items():
        for i, v in enumerate(values):
            if v is not None:
                rows.append({**base, "train_exp": i, "eval_exp": "train",
                             "metric": "steps" if name == "steps" else f"loss:{name}",
                             "k": "", "value": v})
    for metric, by_k in (payload.get("seen") or {}).items():
        curves = by_k.items() if isinstance(by_k, dict) else [("", by_k)]
        for k, curve in curves:
            for i, v in enumerate(curve):
                if v is not None:
                    rows.append({**base, "train_exp": i, "eval_exp": "seen", "metric": metric,
                                 "k": k, "value": v})
    return rows


def matrix_cell_ids(text: str | None, source: str = "matrix.yaml") -> set[str] | None:
    """The cell ids of a store's ``matrix.yaml`` (``<scenario>__<strategy>__seed<k>``, as
    :func:`benchmarks.config.expand_cells` names them), read without the registries; None
    when there is no such text or it is not a matrix (every cell then counts as current).
    A text past the YAML reader's bounds is a one-line ``LrbenchError`` (``source``)."""
    try:
        data = _yaml(text, source) if text else None
        names = [sc if isinstance(sc, str) else sc["name"] for sc in data["scenarios"]]
        return {f"{sc}__{st}__seed{int(seed)}" for sc in names
                for st in data["strategies"] for seed in data["seeds"]}
    except LrbenchError:
        raise
    except (KeyError, TypeError, ValueError):
        return None


def stale_cells(store: Path, cells: list[Cell] | None) -> list[Path]:
    """The cell folders of ``store`` that are not cells of the current matrix (``cells``;
    none when None): left by ``--resume`` with a changed matrix, kept on disk but out of
    every table. A folder whose id is a current cell's but whose finished result has
    another config hash is stale too (the matrix changed and it has not rerun yet)."""
    if cells is None:
        return []
    current = {c.id: c.hash for c in cells}
    stale = []
    for folder in sorted(p.parent for p in (store / "cells").glob("*/result.json")):
        if folder.name not in current:
            stale.append(folder)
            continue
        try:
            result = read_result(folder / "result.json")
        except (OSError, DamagedResult):
            continue  # not stale: damaged, and recomputed by the next run
        if result is not None and result.get("config_hash") != current[folder.name]:
            stale.append(folder)
    return stale


def stale_lines(stale: list[Path]) -> list[str]:
    """One line per (store, scenario, strategy) of ``stale`` cell folders, with their
    count and seeds (for stderr)."""
    groups: dict[tuple[Path, str], list[str]] = {}
    for folder in stale:
        scenario, _, rest = folder.name.partition("__")
        strategy, _, seed = rest.rpartition("__")
        groups.setdefault((folder.parent.parent, f"{scenario} / {strategy or rest}"),
                          []).append(seed or folder.name)
    return [f"lrbench: note: {len(seeds)} stale cell{'s' if len(seeds) > 1 else ''} of "
            f"{group} ({', '.join(seeds)}) in {str(store)!r}: not in its current matrix, "
            "kept on disk, left out of the tables" for (store, group), seeds in groups.items()]


def clean_temporary(store: Path) -> list[Path]:
    """Remove the temporary files an interrupted writer left (``kill -9`` or a full disk
    between :func:`atomic_write`'s write and its rename): ``metrics.io.TMP_GLOB`` in the
    store's folder, its cells' folders and the shared first experiences' folder. Call it
    holding the store's lock: no other writer of this store can be mid-write then."""
    from metrics.io import TMP_GLOB

    removed = []
    for folder in (store, store / "first",
                   *sorted(p for p in (store / "cells").glob("*") if p.is_dir())):
        for path in folder.glob(TMP_GLOB):
            if path.is_file():
                with suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path)
    return removed


def write_tidy(store: Path, cells: list[Cell] | None = None) -> int:
    """Rebuild ``results.csv`` and ``results.parquet`` from every finished ``result.json``
    of the current matrix (``cells``; every cell in the store when None): stale cells
    (:func:`stale_cells`) and damaged results (recomputed by the next run) are left out.

    Returns the number of rows. ``k`` is text (empty for mAP@R) and ``eval_exp`` too
    (``seen`` marks the union of seen experiences), in both files.
    """
    rows: list[dict[str, Any]] = []
    stale = set(stale_cells(store, cells))
    for path in sorted((store / "cells").glob("*/result.json")):
        if path.parent in stale:
            continue
        try:
            result = read_result(path)
        except (OSError, DamagedResult):
            continue
        if result is not None and result.get("status") == "finished":
            rows += tidy_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TIDY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(store / "results.csv", buf.getvalue())
    import pandas as pd

    frame = pd.DataFrame(rows, columns=TIDY_COLUMNS).astype(
        {"k": str, "eval_exp": str, "value": float})
    atomic_write(store / "results.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    return len(rows)
