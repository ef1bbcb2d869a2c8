"""The checks before any training: what would fail the cells later is refused up front.

A matrix is checked whole before its first cell trains: every cell's batches can be drawn
from its stream (:func:`check_cells`), and every image of the real datasets it reads
decodes (:func:`find_corrupt`; the answer is kept in the cache folder). Broken images
refuse the matrix in one line, or with ``--skip-corrupt`` are left out of the cells that
read them (:func:`mark_skipped`). :func:`check_data` does all of it.
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from benchmarks.errors import LrbenchError, abridged
from benchmarks.run.cell import build_benchmark
from benchmarks.run.store import atomic_write

if TYPE_CHECKING:
    from benchmarks.config import Cell


def cell_datasets(cell: Cell) -> list[tuple[str, dict[str, Any]]]:
    """The named datasets a cell's scenario reads, each with its loader keyword arguments."""
    sc = cell.scenario
    if sc.dataset:
        return [(sc.dataset, dict(sc.dataset_kwargs))]
    return [(n, dict(sc.dataset_kwargs.get(n) or {})) for n in sc.datasets or []]


#: bump when what a decode check finds changes (its entries are then ignored)
CHECK_VERSION = 1


def find_corrupt(cells: list[Cell], progress: bool = True
                 ) -> dict[str, list[tuple[str, str]]]:
    """Decode every image of every real dataset the cells read, before any training:
    dataset name -> ``(path relative to its root, reason)`` of each broken file.

    A truncated JPEG is found only by decoding it whole, which costs about a minute per
    10k images, so a dataset's answer is kept in the cache folder, keyed by its files'
    paths, sizes and modification times: a rerun or another matrix on the same files
    checks nothing again, and a replaced file is checked anew.
    """
    import hashlib

    from benchmarks.datasets import ImageListDataset, check_images, get_dataset
    from benchmarks.run.cache import cache_dir

    broken: dict[str, list[tuple[str, str]]] = {}
    done: set[str] = set()
    for cell in cells:
        root = cell.data_root or os.environ.get("LRBENCH_DATA")
        for name, kwargs in cell_datasets(cell):
            if name.partition(":")[0] == "synth-fg":
                continue  # generated in memory: no file to break
            seen = json.dumps([name, root, kwargs, cell.cache.dir], sort_keys=True,
                              default=str)
            if seen in done:
                continue
            done.add(seen)
            ds = get_dataset(name, root, "all", **kwargs)
            if not isinstance(ds, ImageListDataset):
                continue
            files = []
            for path, _ in ds.samples:
                st = os.stat(path)
                files.append((os.path.relpath(path, ds.root), st.st_size, st.st_mtime_ns))
            key = hashlib.sha256(json.dumps([CHECK_VERSION, str(ds.root), files]).encode()
                                 ).hexdigest()[:24]
            entry = cache_dir(cell.cache.dir) / "checks" / f"{ds.name}-{key}.json"
            try:
                bad = [tuple(b) for b in json.loads(entry.read_text())]
            except (OSError, ValueError):
                bad = [(os.path.relpath(p, ds.root), why)
                       for p, why in check_images(ds, progress=progress)]
                with suppress(OSError):  # an unwritable cache costs the check next time
                    atomic_write(entry, json.dumps(bad))
            if bad:
                known = broken.setdefault(ds.name, [])
                known += [b for b in bad if b not in known]  # type: ignore[misc]
    return broken


def corrupt_error(broken: dict[str, list[tuple[str, str]]]) -> LrbenchError:
    """The one-line refusal of a matrix whose data holds broken images."""
    parts = [f"{len(bad)} in {name} ({abridged([p for p, _ in bad], 3)})"
             for name, bad in sorted(broken.items())]
    return LrbenchError(
        f"images that cannot be decoded: {'; '.join(parts)}; replace or remove them "
        "('lrbench data check NAME' lists them all), or pass --skip-corrupt to leave them "
        "out (recorded in the store)")


def mark_skipped(cells: list[Cell], broken: dict[str, list[tuple[str, str]]]
                 ) -> list[Cell]:
    """``cells``, each leaving the ``broken`` files of its datasets out (its
    ``skip_files``): a cell run without some images is another cell, with its own hash."""
    out = []
    for cell in cells:
        skips = {name: sorted(p for p, _ in broken[name])
                 for name in sorted({n for n, _ in cell_datasets(cell)}) if name in broken}
        out.append(cell.without_files(skips) if skips else cell)
    return out


def check_data(cells: list[Cell], skip_corrupt: bool = False, progress: bool = True
               ) -> tuple[list[Cell], dict[str, list[tuple[str, str]]]]:
    """Everything about the cells' data that would fail them later, checked before any
    training: batch shapes (:func:`check_cells`), then broken images
    (:func:`find_corrupt`), refused, or with ``skip_corrupt`` left out of the cells
    (:func:`mark_skipped`, then the shapes again without them). Returns the cells to run
    and the broken files."""
    check_cells(cells)
    broken = find_corrupt(cells, progress)
    if broken and not skip_corrupt:
        raise corrupt_error(broken)
    if broken:
        cells = mark_skipped(cells, broken)
        check_cells(cells)
    return cells, broken


def check_cells(cells: list[Cell]) -> None:
    """Refuse, before any training, cells whose batches cannot be drawn from their stream:
    P classes per batch need every experience to hold at least P classes (a one-line
    ``LrbenchError`` naming the experience and the largest P that fits)."""
    shapes: dict[str, Any] = {}
    for cell in cells:
        sc = cell.scenario
        key = json.dumps([sc.model_dump(), cell.data_root, cell.skip_files], sort_keys=True,
                         default=str)
        if key not in shapes:
            shapes[key] = build_benchmark(cell, info_only=True)
        info = shapes[key]
        p = cell.training.p
        small = min(info.experiences, key=lambda e: e.num_classes)
        if small.num_classes < p:
            raise LrbenchError(
                f"experience {small.index} of scenario {sc.name!r} has "
                f"{small.num_classes} classes, fewer than P = {p} classes per batch "
                f"({cell.strategy}); lower training.p to at most {small.num_classes}")

