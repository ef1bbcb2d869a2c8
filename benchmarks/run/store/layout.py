"""The store's folder layout: its files and folders, checked before any training, and its
matrix.yaml, cells.json and skipped.json."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.errors import LrbenchError
from metrics.io import (
    TMP_GLOB,
    atomic_write,
    check_regular,
    check_writable,
    read_regular,
)

if TYPE_CHECKING:
    from benchmarks.config import Cell, MatrixConfig


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

# -- the store's folder ---------------------------------------------------------------------
def check_out_folder(out: str | Path) -> None:
    """Refuse at once an ``--out`` that cannot become a folder: a file where it or one of
    its parents should be, or a nearest existing folder this user may not write to. Creates
    nothing (a refused run leaves no folder behind) and reads no data, so the refusal comes
    before the strategies are imported and the images checked; :func:`prepare_store`
    still proves it writable before the first cell."""
    path = Path(out).absolute()
    nearest = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if not nearest.is_dir():
        why, fix = f"{str(nearest)!r} is not a folder", "remove or rename that file"
    elif not os.access(nearest, os.W_OK | os.X_OK):
        why, fix = f"no permission to write in {str(nearest)!r}", "fix its permissions"
    else:
        return
    raise LrbenchError(f"cannot write to results folder {str(out)!r} ({why}); {fix} or "
                       "choose another --out")


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

STORE_FOLDERS = ("cells", "first", "trained")

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


def shared_training_dir(store: Path, key: str) -> Path:
    """Where the cells with training key ``key`` share the end state of each experience's
    training loop (:attr:`~benchmarks.config.Cell.training_key`)."""
    return store / "trained" / key


def remove_first_experiences(store: Path, keys: Iterable[str] | None = None,
                             training_keys: Iterable[str] | None = None) -> None:
    """Remove the shared first-experience checkpoints of ``keys`` and the shared training
    folders of ``training_keys`` (both None: every one of either), and their folders once
    empty: they only speed up a run, and are large."""
    folder = store / "first"
    paths = folder.glob("*.pt") if keys is None else (
        first_experience_path(store, k) for k in keys)
    for path in paths:
        with suppress(IsADirectoryError):  # not one of ours: left alone
            path.unlink(missing_ok=True)
    with suppress(OSError):
        folder.rmdir()
    trained = store / "trained"
    dirs = (trained.glob("*") if keys is None and training_keys is None else
            (shared_training_dir(store, k) for k in training_keys or ()))
    for d in dirs:
        if d.is_symlink() or not d.is_dir():  # not one of ours: left alone
            continue
        for path in [*d.glob("exp*.pt"), *d.glob(TMP_GLOB)]:  # an interrupted write's too
            with suppress(IsADirectoryError):
                path.unlink(missing_ok=True)
        with suppress(OSError):
            d.rmdir()
    with suppress(OSError):
        trained.rmdir()


def result_path(store: Path, cell: Cell) -> Path:
    """One cell's ``result.json`` in ``store`` (read it with :func:`read_result`)."""
    return cell_dir(store, cell) / "result.json"


def check_lock_files(store: Path) -> None:
    """Refuse a ``.lock`` or ``.lock.owner`` of ``store`` that is not a regular file (a
    folder, a FIFO, a symbolic link loop): one line naming it, before the lock is taken."""
    for name, what in ((".lock", "lock file"), (".lock.owner", "lock owner record")):
        path = store / name
        if os.path.isdir(path):
            raise LrbenchError(f"{str(path)!r} is a folder, not lrbench's {what}; remove it "
                               "and run again")
        check_regular(path, what, "remove it and run again")


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
