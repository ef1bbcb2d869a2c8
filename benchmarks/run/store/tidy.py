"""The store's tidy long table (results.csv, results.parquet): one row per value of every finished
cell of the current matrix; stale cells named, temporary files removed."""

from __future__ import annotations

import csv
import io
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.run.store.result import DamagedResult, read_result
from metrics.io import (
    atomic_write,
)

if TYPE_CHECKING:
    from benchmarks.config import Cell


#: the columns of ``results.csv`` and ``results.parquet``
TIDY_COLUMNS = ["scenario", "strategy", "seed", "train_exp", "eval_exp", "metric", "k", "value"]

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
    store's folder, its cells' folders, the shared first experiences' folder and the
    shared training loops' folders. Call it holding the store's lock: no other writer of
    this store can be mid-write then."""
    from metrics.io import TMP_GLOB

    removed = []
    for folder in (store, store / "first",
                   *sorted(p for p in (store / "trained").glob("*") if p.is_dir()),
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
