"""Pretrained weights fetched once, before any training (a preflight check).

Every distinct weight file the cells of a matrix load is found in its cache or downloaded
here, in the process that owns the store, before the first cell builds its model
(:mod:`strategies.weights` says where each file comes from). A file that can be had neither
way refuses the whole matrix in one line naming the file, its source and the folder to put
it in, within the first seconds, instead of failing every cell as it starts. A local weight
file named by path must exist. ``lrbench run --dry-run`` says, for each file, whether it is
cached or would be downloaded (it downloads nothing).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.errors import LrbenchError

if TYPE_CHECKING:
    from benchmarks.config import Cell


def _sources(cells: list[Cell]) -> dict[str, Any]:
    """The distinct weight files of ``cells`` with ``pretrained: true``, by identity."""
    from strategies.weights import resolve

    out: dict[str, Any] = {}
    seen: set[tuple[str, str | None]] = set()
    for cell in cells:
        m = cell.model
        if m.pretrained is not True or (m.trunk, m.weights) in seen:
            continue
        seen.add((m.trunk, m.weights))
        try:
            source = resolve(m.trunk, m.weights)
        except ValueError as exc:
            raise LrbenchError(f"model: {exc}") from None
        out.setdefault(source.name, source)
    return out


def _local_files(cells: list[Cell]) -> None:
    """Refuse a ``pretrained`` path that is not a file (every cell would fail on it)."""
    for path in sorted({str(c.model.pretrained) for c in cells
                        if c.model.pretrained and c.model.pretrained is not True}):
        file = Path(path.partition("#sha256=")[0]).expanduser()
        if not file.is_file():
            raise LrbenchError(f"model.pretrained: weights file {str(file)!r} not found; give "
                               "the path of a local file, or pretrained: true for the "
                               "trunk's ImageNet weights")


def fetch_weights(cells: list[Cell], log: Callable[[str], None] | None = None) -> None:
    """Make every weight file ``cells`` load local: found in its cache, or downloaded (hash
    checked); a one-line :class:`LrbenchError` when one can be neither."""
    from strategies.weights import WeightsError

    _local_files(cells)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    for source in _sources(cells).values():
        try:
            if source.cached() is not None:
                continue
            path = source.fetch(progress=sys.stderr.isatty())
        except WeightsError as exc:
            raise LrbenchError(str(exc)) from None
        log(f"lrbench: note: downloaded {source.name} ({source.file}) into {path.parent}")


def describe_weights(cells: list[Cell]) -> list[str]:
    """One line per weight file ``cells`` load, for ``--dry-run``: cached or to download."""
    from strategies.weights import WeightsError

    lines = []
    for source in _sources(cells).values():
        try:
            path = source.cached()
        except WeightsError as exc:
            lines.append(f"weights {source.name}: {exc}")
            continue
        where = (f"cached at {path}" if path is not None else
                 f"not cached: the run downloads {source.download_url} into {source.folder}")
        lines.append(f"weights {source.name} ({source.file}): {where}")
    return lines
