"""The checks before any training: what would fail the cells later is refused up front.

A matrix is checked whole before its first cell trains: its datasets' keyword arguments
fit their loaders (:func:`check_dataset_kwargs`), its device exists here
(:func:`check_devices`), its cache folder is writable (:func:`check_cache_dirs`), every
cell's batches can be drawn from its stream and every test image has another of its
class to find (:func:`check_cells`), and every image of the real datasets it reads
decodes (:func:`find_corrupt`; the answer is kept in the cache folder). Broken images
refuse the matrix in one line, or with ``--skip-corrupt`` are left out of the cells that
read them (:func:`mark_skipped`). :func:`check_data` does all of it.
"""

from __future__ import annotations

import json
import os
import stat
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.errors import LrbenchError, abridged
from benchmarks.run.cell import build_benchmark
from benchmarks.run.store import atomic_write
from metrics.io import check_writable

if TYPE_CHECKING:
    from benchmarks.config import Cell


def cell_datasets(cell: Cell) -> list[tuple[str, dict[str, Any]]]:
    """The named datasets a cell's scenario reads, each with its loader keyword arguments."""
    sc = cell.scenario
    if sc.dataset:
        return [(sc.dataset, dict(sc.dataset_kwargs))]
    return [(n, dict(sc.dataset_kwargs.get(n) or {})) for n in sc.datasets or []]


#: bump when what a decode check finds changes (its entries are then ignored)
CHECK_VERSION = 2


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
            files: list[tuple[str, int, int | str]] = []
            gone: list[tuple[str, str]] = []  # listed in the index, but no file to open
            for path, _ in ds.samples:
                rel = os.path.relpath(path, ds.root)
                try:
                    st = os.stat(path)
                except OSError as exc:  # missing, a symbolic link loop: a broken file
                    gone.append((rel, f"cannot be opened ({exc.strerror or exc})"))
                    files.append((rel, -1, str(exc.strerror)))
                    continue
                if not stat.S_ISREG(st.st_mode):  # a FIFO would block the decoder
                    gone.append((rel, "not a regular file"))
                files.append((rel, st.st_size, st.st_mtime_ns))
            key = hashlib.sha256(json.dumps([CHECK_VERSION, str(ds.root), files]).encode()
                                 ).hexdigest()[:24]
            entry = cache_dir(cell.cache.dir) / "checks" / f"{ds.name}-{key}.json"
            try:
                bad = [tuple(b) for b in json.loads(entry.read_text())]
            except (OSError, ValueError):
                missing = {p for p, _ in gone}
                bad = gone + [(os.path.relpath(p, ds.root), why)
                              for p, why in check_images(ds, progress=progress)
                              if os.path.relpath(p, ds.root) not in missing]
                with suppress(OSError):  # an unwritable cache costs the check next time
                    atomic_write(entry, json.dumps(bad))
            if bad:
                known = broken.setdefault(ds.name, [])
                known += [b for b in bad if b not in known]  # type: ignore[misc]
    return broken


def check_checkpoints(paths: list[Path]) -> None:
    """Refuse, before any training, a checkpoint a run would resume from that does not load
    as tensors and plain values (``strategies.checkpoints.read_checkpoint``: a planted pickle
    never runs, a truncated file is not a cell that fails on every rerun): one line naming
    the file and what to do. Paths with no file are skipped."""
    from metrics.io import check_regular

    there = [p for p in paths if check_regular(p, "checkpoint", "delete it and run again")]
    if not there:
        return
    from strategies.checkpoints import read_checkpoint

    for path in there:
        read_checkpoint(path)


def settle_checkpoints(store: Path, cells: list[Cell], checkpoints: bool, keep_first: bool,
                       force: bool, older: Any = None) -> None:
    """The checkpoints a run of ``cells`` may load, holding the store's lock, before anything
    is written or trained: with ``checkpoints``, each unfinished cell's ``checkpoint.pt``
    is checked (:func:`check_checkpoints`); the shared first experiences an earlier command
    left are removed unread (they live for one command; one left by a killed run may be
    older code's), or with ``keep_first`` (a caller that shares them across its runs, as
    ``tune``) checked too."""
    from benchmarks.run.store import cell_dir, finished, remove_first_experiences

    if checkpoints:
        check_checkpoints([cell_dir(store, c) / "checkpoint.pt" for c in cells
                           if force or not finished(cell_dir(store, c), c, older)])
    if keep_first:
        check_checkpoints(sorted((store / "first").glob("*.pt")))
    else:
        remove_first_experiences(store)


def check_models(cells: list[Cell]) -> None:
    """Refuse, before any training, a model no cell could build: ``model.frozen_stages``
    not below its trunk's stage count, a built-in trunk's ``pretrained`` weights that are
    not there (a one-line ``LrbenchError`` naming the setting and the fix)."""
    done: set[str] = set()
    for cell in cells:
        m = cell.model
        key = json.dumps([m.trunk, m.frozen_stages, m.pretrained], default=str)
        if key in done:
            continue
        done.add(key)
        if m.frozen_stages:
            from strategies.model import make_trunk

            try:
                stages = len(make_trunk(m.trunk)[0])
            except (ValueError, ImportError) as exc:
                raise LrbenchError(f"model.trunk {m.trunk!r}: {exc}") from None
            if m.frozen_stages >= stages:
                raise LrbenchError(
                    f"model.frozen_stages: {m.frozen_stages} is not below the {stages} stages "
                    f"of trunk {m.trunk!r} (a frozen stem leaves at least one stage to "
                    f"train); give 0..{stages - 1}")
        if m.pretrained is not False and not m.trunk.startswith("timm:"):
            from strategies.model import find_weights

            file = find_weights(m.trunk) if m.pretrained is True else Path(m.pretrained)
            if file is None or not file.is_file():
                what = ("no local ImageNet weights are installed for it" if m.pretrained is True
                        else f"{str(file)!r} is not a file")
                raise LrbenchError(f"model.pretrained: {what} (trunk {m.trunk!r}); give the "
                                   "path of its weight file, or pretrained: false")


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


def check_data(cells: list[Cell], skip_corrupt: bool = False, progress: bool = True,
               devices: bool = True) -> tuple[list[Cell], dict[str, list[tuple[str, str]]]]:
    """Everything about the cells that would fail them later, checked before any
    training: their datasets' keyword arguments (:func:`check_dataset_kwargs`), devices
    (:func:`check_devices`, unless ``devices`` is False: Ray runs cells on other hosts),
    cache folders (:func:`check_cache_dirs`), batch shapes (:func:`check_cells`), then
    broken images (:func:`find_corrupt`), refused, or with ``skip_corrupt`` left out of the
    cells (:func:`mark_skipped`, then the shapes again without them). Returns the cells to
    run and the broken files. Pretrained weights come first: fetched once, or the matrix
    refused in its first seconds (:func:`benchmarks.run.fetch.fetch_weights`)."""
    from benchmarks.run.fetch import fetch_weights

    fetch_weights(cells)
    check_dataset_kwargs(cells)
    check_models(cells)
    if devices:
        check_devices(cells)
    check_cache_dirs(cells)
    check_cells(cells)
    broken = find_corrupt(cells, progress)
    if broken and not skip_corrupt:
        raise corrupt_error(broken)
    if broken:
        cells = mark_skipped(cells, broken)
        check_cells(cells)
    return cells, broken


def check_cells(cells: list[Cell]) -> None:
    """Refuse, before any training, cells whose batches cannot be drawn from their stream
    or whose test sets cannot be measured (a one-line ``LrbenchError`` naming the
    experience, the class and the setting to change):

    * P classes per batch need every experience to hold at least P classes;
    * K images per class need every class to hold K train images (the P x K sampler
      would otherwise repeat images silently);
    * every test image is a query whose gallery is the other test images: a class with a
      single test image has nothing to find (always a miss);
    * the strategy can run on the stream's sizes (its ``stream_problem``: a buffer larger
      than the data it can have seen)."""
    from strategies import get_strategy, make_config

    shapes: dict[str, Any] = {}
    for cell in cells:
        sc = cell.scenario
        key = json.dumps([sc.model_dump(), cell.data_root, cell.skip_files], sort_keys=True,
                         default=str)
        if key not in shapes:
            shapes[key] = build_benchmark(cell, info_only=True)
        info = shapes[key]
        p, k = cell.training.p, cell.training.k
        where = f"scenario {sc.name!r}"
        small = min(info.experiences, key=lambda e: e.num_classes)
        if small.num_classes < p:
            fix = (f"lower training.p to at most {small.num_classes}" if small.num_classes >= 2
                   else "a batch needs at least 2 classes (training.p >= 2): give every "
                   "experience at least 2 classes in the schedule")
            raise LrbenchError(
                f"experience {small.index} of {where} has {small.num_classes} "
                f"class{'es' if small.num_classes != 1 else ''}, fewer than P = {p} classes "
                f"per batch ({cell.strategy}); {fix}")
        for e in info.experiences:
            for name, n_train, n_test in zip(e.class_names, e.train_per_class,
                                             e.test_per_class, strict=False):
                if n_train < k:
                    fix = (f"lower training.k to at most {n_train}" if n_train >= 2 else
                           "a class needs at least 2 train images (training.k >= 2): add "
                           "images or leave the class out of the dataset")
                    raise LrbenchError(
                        f"class {name!r} of experience {e.index} of {where} has {n_train} "
                        f"train image{'s' if n_train != 1 else ''}, fewer than K = {k} images "
                        f"per class in a batch ({cell.strategy}); {fix}")
                if n_test == 1:
                    raise LrbenchError(
                        f"class {name!r} of experience {e.index} of {where} has a single "
                        "test image: as a query it has no other image of its class to find "
                        "(always a miss); give it at least 2 test images or leave the class "
                        "out of the dataset")
        spec = get_strategy(cell.plugin_name)
        problem = spec.cls.stream_problem(make_config(cell.plugin_name, cell.hparams),
                                          [e.train_images for e in info.experiences])
        if problem:
            raise LrbenchError(f"strategy {cell.strategy!r} on {where}: {problem}")


#: keyword arguments every loader takes from lrbench itself, never from a matrix file
RESERVED_KWARGS = ("self", "root", "split", "transform", "download", "target_transform")


def check_dataset_kwargs(cells: list[Cell]) -> None:
    """Each scenario's ``dataset_kwargs`` against its loader's signature and types: an
    unknown name (with the closest known one) or a value of the wrong type is a one-line
    error before any dataset is built. A lifelong scenario's ``dataset_kwargs`` maps each
    of its datasets to that dataset's keyword arguments."""
    import inspect
    import typing

    from pydantic import TypeAdapter, ValidationError

    from benchmarks.datasets import dataset_class
    from benchmarks.errors import closest

    done: set[str] = set()
    for cell in cells:
        sc = cell.scenario
        given = sc.dataset_kwargs or {}
        where = f"scenario {sc.name!r}: dataset_kwargs"
        key = json.dumps([sc.name, given], sort_keys=True, default=str)
        if key in done:
            continue
        done.add(key)
        if sc.dataset:
            pairs = [(sc.dataset, given, where)]
        else:
            names = list(sc.datasets or [])
            stray = [n for n in given if n not in names]
            if stray:
                raise LrbenchError(
                    f"{where}: {stray[0]!r} is not a dataset of this lifelong stream; give "
                    f"keyword arguments per dataset, one of {', '.join(names)}")
            pairs = []
            for n in names:
                if not isinstance(given.get(n) or {}, dict):
                    raise LrbenchError(f"{where}.{n}: give {n}'s keyword arguments as a "
                                       f"mapping, got {given[n]!r}")
                pairs.append((n, given.get(n) or {}, f"{where}.{n}"))
        for name, kwargs, at in pairs:
            cls = dataset_class(name)
            params = {k: v for k, v in inspect.signature(cls.__init__).parameters.items()
                      if k not in RESERVED_KWARGS
                      and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)}
            try:
                hints = typing.get_type_hints(cls.__init__)
            except Exception:  # noqa: BLE001 (an unresolvable hint: names checked, not types)
                hints = {}
            for arg, value in kwargs.items():
                if arg not in params:
                    known = ", ".join(params) or "none"
                    raise LrbenchError(
                        f"{at}: {name} takes no argument {arg!r}.{closest(str(arg), params)} "
                        f"Its arguments: {known}")
                hint = hints.get(arg)
                if hint is None or hint is typing.Any:
                    continue
                wants_bool = hint is bool or bool in typing.get_args(hint)
                try:
                    if isinstance(value, bool) and not wants_bool:
                        raise ValueError("a yes/no value")
                    checked = TypeAdapter(hint).validate_python(value)
                    if hasattr(checked, "__next__"):  # an iterable is checked as it is read
                        list(checked)
                except (ValidationError, ValueError, TypeError) as exc:
                    why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                    raise LrbenchError(
                        f"{at}.{arg}: {why} (got {value!r}); {name} takes "
                        f"{_type_name(hint)}") from None


def _type_name(hint: Any) -> str:
    import typing

    return str(hint).replace("typing.", "") if typing.get_args(hint) else getattr(
        hint, "__name__", str(hint))


def check_devices(cells: list[Cell]) -> None:
    """Refuse a ``training.device`` this host does not have (``cuda`` without a GPU,
    ``cuda:3`` with two, ``mps`` off a Mac): every cell would fail on it."""
    wanted = sorted({c.training.device for c in cells} - {"cpu"})
    if not wanted:
        return
    import torch

    for device in wanted:
        if device == "mps":
            ok = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
            have = "no MPS device" if not ok else ""
        else:
            index = int(device.partition(":")[2] or 0)
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            ok, have = index < count, f"{count} CUDA device{'s' if count != 1 else ''}"
        if not ok:
            raise LrbenchError(f"training.device {device!r}: this host has {have}; use "
                               "training.device=cpu or a device it has")


def check_cache_dirs(cells: list[Cell]) -> None:
    """Refuse a cache folder (``cache.dir``, else ``$LRBENCH_CACHE``, else
    ``~/.cache/lrbench``) that cannot be created and written, when a cell caches (images,
    or a frozen stem's features) or ``cache.dir`` is given: every such cell would fail."""
    from benchmarks.run.cache import cache_dir
    from benchmarks.run.cell import uses_feature_cache

    for chosen in sorted({str(c.cache.dir) for c in cells
                          if c.cache.dir or c.cache.images or uses_feature_cache(c)}):
        folder = cache_dir(None if chosen == "None" else chosen)
        try:
            check_writable(folder)
        except OSError as exc:
            what = "cache.dir" if chosen != "None" else "the cache folder"
            raise LrbenchError(
                f"{what} {str(folder)!r} cannot be written ({exc.strerror or exc}); give "
                "cache.dir a writable folder (or set $LRBENCH_CACHE)") from None
