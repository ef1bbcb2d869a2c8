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
  while the OS lock is held, so nobody reads it half-written). On a shared disk whose
  file locks do not reach across hosts, that record still keeps a runner of another host
  out: a holder on another host is never taken for stale, since its pid cannot be checked
  from here; the message names the host and the file to delete if that run is dead;
* release removes the owner record only when it is this process's own.

The process that holds the lock is the only writer of the store: cells' results come back
to it from wherever they ran. Nothing here imports torch, Avalanche or the strategies.
"""

from __future__ import annotations

import csv
import io
import json
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
from metrics.io import atomic_write, check_writable

if TYPE_CHECKING:
    from benchmarks.config import Cell, MatrixConfig

#: the columns of ``results.csv`` and ``results.parquet``
TIDY_COLUMNS = ["scenario", "strategy", "seed", "train_exp", "eval_exp", "metric", "k", "value"]


def hostname() -> str:
    """This host's name, as the lock records it."""
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of the recorded holder, or None (no record, or not ours to read)."""
    try:
        pid, host = path.read_text().split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold ``store`` for this runner; a live holder is a one-line ``LrbenchError``."""
    store = Path(store)
    owner_file = store / ".lock.owner"
    if (store / ".lock").is_dir():
        raise LrbenchError(f"{str(store / '.lock')!r} is a folder, not lrbench's lock file; "
                           "remove it and run again")
    lock = FileLock(store / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        held = _owner(owner_file)
        who = f" (pid {held[0]} on {held[1]})" if held else ""
        gone = ""
        if held and held[1] != hostname():  # its pid cannot be checked from this host
            gone = (f"; if host {held[1]!r} is gone for good, delete "
                    f"{str(store / '.lock')!r} and {str(owner_file)!r} and run again")
        raise LrbenchError(f"results store {str(store)!r} is in use by another lrbench run"
                           f"{who}; wait for it to finish or choose another --out{gone}"
                           ) from None
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
            if pid != os.getpid() and _pid_alive(pid):
                raise LrbenchError(
                    f"results store {str(store)!r} is in use by another lrbench run (pid "
                    f"{pid}); wait for it to finish or choose another --out")
        atomic_write(owner_file, me + "\n")  # a dead holder's record on this host: replaced
        try:
            yield
        finally:
            if _owner(owner_file) == (os.getpid(), hostname()):
                with suppress(OSError):
                    owner_file.unlink()
    finally:
        lock.release()


def lock_free(store: Path) -> bool:
    """Whether no runner holds ``store`` (its OS lock can be taken and no owner record)."""
    lock = FileLock(Path(store) / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    return not (Path(store) / ".lock.owner").exists()


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
    check_store(store, config, force, resume)
    return store


def same_matrix(stored: str, config: MatrixConfig) -> bool:
    """Whether a store's ``matrix.yaml`` is ``config``: compared once both are resolved
    with today's defaults, so a setting added to lrbench since the store was written does
    not make it "another matrix" (its cells' hashes still decide what reruns), and without
    the sections that change no number (tracking, SLURM resources)."""
    import yaml

    from benchmarks.config import parse_config, resolved_yaml

    if stored == resolved_yaml(config):
        return True
    try:
        old = parse_config(yaml.safe_load(stored), "matrix.yaml", registries=False)
    except (LrbenchError, yaml.YAMLError, TypeError, ValueError):
        return False
    # tracking and SLURM settings change no number: a rerun may switch them
    return resolved_yaml(old, run_only=False) == resolved_yaml(config, run_only=False)


def matrix_difference(stored: str, config: MatrixConfig) -> str:
    """The first setting where a store's ``matrix.yaml`` and ``config`` differ, as
    ``key.path: old -> new`` (compared resolved, as :func:`same_matrix` does)."""
    import yaml

    from benchmarks.config import RUN_ONLY_SECTIONS, parse_config

    skip = set(RUN_ONLY_SECTIONS)  # they never make a store "another matrix"
    new = config.model_dump(mode="json", exclude=skip)
    try:
        old = parse_config(yaml.safe_load(stored), "matrix.yaml", registries=False
                           ).model_dump(mode="json", exclude=skip)
    except (LrbenchError, yaml.YAMLError, TypeError, ValueError):
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
    existing = store / "matrix.yaml"
    if existing.is_file() and not (force or resume):
        stored = existing.read_text()
        if not same_matrix(stored, config):
            raise LrbenchError(
                f"{str(store)!r} holds a different matrix ({matrix_difference(stored, config)}"
                "); use --resume to keep its finished cells that still match, --force to "
                "start over, or another --out")


def read_matrix(store: Path) -> dict[str, Any] | None:
    """A store's ``matrix.yaml`` as a raw mapping; None when it is missing or unreadable."""
    import yaml

    try:
        data = yaml.safe_load((Path(store) / "matrix.yaml").read_text())
    except (OSError, yaml.YAMLError):
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
    current). A result whose id is absent, or whose hash differs, is stale."""
    try:
        data = json.loads((Path(store) / "cells.json").read_text())
        if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            return {str(k): v for k, v in data.items()}
    except (OSError, ValueError):
        pass
    try:
        text = (Path(store) / "matrix.yaml").read_text()
    except OSError:
        return None
    ids = matrix_cell_ids(text)
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
        data = json.loads((Path(store) / "skipped.json").read_text())
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
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def _matrix_problem(name: str, mat: Any, n: int | None) -> str | None:
    """Why ``mat`` is not an n x n R matrix of numbers (None when it is one)."""
    if not isinstance(mat, list) or not all(isinstance(r, list) for r in mat):
        return f"{name} is not a list of rows"
    if len({len(r) for r in mat}) > 1 or (n is not None and (len(mat) != n or any(
            len(r) != n for r in mat))):
        return f"{name} is ragged (rows of {[len(r) for r in mat][:6]} values)"
    if not all(_number(v) for r in mat for v in r):
        return f"{name} holds a value that is not a number"
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
    summary = payload.get("summary", {})  # the run's headline; reports recompute theirs
    if not isinstance(summary, dict) or not all(
            _number(summary.get(key)) for key in ("final_mean", "forgetting", "final_seen")):
        return "payload.summary is of the wrong type"
    for key in ("losses", "timings", "cross_model"):
        if not isinstance(payload.get(key) or {}, dict):
            return f"payload.{key} is not a mapping"
    return None


def read_result(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A cell's ``result.json``, parsed and checked; None when there is no such file.

    A file that cannot be read raises ``OSError``; one that is not what lrbench writes
    (not JSON, or :func:`result_problem` finds a fault) raises :class:`DamagedResult`, one
    line naming the file and what to do.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        text = "\0"
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
    aside, n = path.with_name(path.name + ".damaged"), 1
    while aside.exists():  # an earlier damaged file is kept too
        n += 1
        aside = path.with_name(f"{path.name}.damaged{n}")
    atomic_write(aside, path.read_bytes())
    path.unlink()
    return aside


def write_result(store: Path, cell: Cell, outcome: dict[str, Any], started: float,
                 versions: dict[str, str], host: dict[str, Any]) -> None:
    """Write one cell's ``log.txt`` and ``result.json`` from its worker's ``outcome``
    (``status`` finished with a ``payload``, or failed with a ``reason``; its ``log``)."""
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
    atomic_write(folder / "log.txt", "\n".join(outcome["log"]) + "\n")
    atomic_write(folder / "result.json", json.dumps(result, indent=1))


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


def matrix_cell_ids(text: str | None) -> set[str] | None:
    """The cell ids of a store's ``matrix.yaml`` (``<scenario>__<strategy>__seed<k>``, as
    :func:`benchmarks.config.expand_cells` names them), read without the registries; None
    when there is no such text or it cannot be read (every cell then counts as current)."""
    import yaml

    try:
        data = yaml.safe_load(text) if text else None
        names = [sc if isinstance(sc, str) else sc["name"] for sc in data["scenarios"]]
        return {f"{sc}__{st}__seed{int(seed)}" for sc in names
                for st in data["strategies"] for seed in data["seeds"]}
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
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
