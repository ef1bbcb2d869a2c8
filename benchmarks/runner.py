"""The matrix runner: every cell through the retrieval template, into the results store.

Results store (DESIGN.md, "Results store")::

    results/<name>/
      matrix.yaml                       the resolved matrix
      skipped.json                      broken images left out (only with --skip-corrupt)
      results.csv, results.parquet      tidy long table of every finished cell
      cells/<scenario>__<strategy>__seed<k>/
        result.json                     config, status, R matrices, timings, versions, host
        log.txt                         the cell's log (a failure's traceback too)
        checkpoint.pt                   only with --checkpoints

Every file is written atomically (temporary file, then rename), so an interrupted run never
leaves a half-written result; a rerun skips cells whose ``result.json`` is finished with
the same config hash. A lock file keeps a second runner out of the same store. Cells run
in this process (``jobs=1``) or in ``jobs`` worker processes; each computes with its own
``training.threads`` (so ``jobs`` changes only how many run at once, never a number), and
results come back to this process, the only writer of the store.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import suppress
from pathlib import Path
from typing import Any

from benchmarks.config import HASH_VERSION, MatrixConfig, expand_cells, resolved_yaml
from benchmarks.errors import LrbenchError, abridged
from benchmarks.run.store import atomic_write, store_lock

TIDY_COLUMNS = ["scenario", "strategy", "seed", "train_exp", "eval_exp", "metric", "k", "value"]


# -- one cell -------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of what the numbers depend on, and the suite's git commit."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "avalanche-lib", "pytorch-metric-learning", "numpy",
                "lrbench"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    try:
        out["lrbench_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parents[1]).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["lrbench_commit"] = "unknown"
    return out


def build_benchmark(cell: dict[str, Any], model: Any = None, info_only: bool = False) -> Any:
    """The Avalanche benchmark of a cell's scenario, through the caches the cell asks for
    (the frozen-stem feature cache needs the cell's ``model``); with ``info_only`` only
    its ``StreamInfo`` (no Avalanche, no cache, nothing decoded)."""
    from benchmarks.cache import cached_pair
    from benchmarks.streams import class_incremental, lifelong

    sc = cell["scenario"]
    root = cell.get("data_root") or os.environ.get("LRBENCH_DATA")
    cache = cell.get("cache") or {}
    stem = model if uses_feature_cache(cell) else None
    skips = cell.get("skip_files") or {}
    caching = not info_only and (stem is not None or bool(cache.get("images")))
    wrap = None
    if caching or skips:
        def wrap(train: Any, test: Any, image_size: int, generated: bool) -> tuple[Any, Any]:
            if getattr(train, "name", None) in skips:  # --skip-corrupt: broken files left out
                train, test = (d.without(skips[d.name]) for d in (train, test))
            if not caching:
                return train, test
            return cached_pair(train, test, image_size, generated, images=True, model=stem,
                               views=cache.get("views", 2), root=cell.get("cache_dir"))
    kw: dict[str, Any] = {"wrap": wrap, "info_only": info_only,
                          "validation": sc.get("validation")}
    if sc.get("dataset"):
        order = cell["seed"] if sc["order"] == "seed" else sc["order"]
        return class_incremental(sc["dataset"], sc["schedule"], root=root, order=order,
                                 image_size=sc["image_size"],
                                 dataset_kwargs=sc.get("dataset_kwargs") or {}, **kw)
    return lifelong(sc["datasets"], root=root, image_size=sc["image_size"],
                    dataset_kwargs=sc.get("dataset_kwargs") or {}, **kw)


def cell_datasets(cell: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The named datasets a cell's scenario reads, each with its loader keyword arguments."""
    sc = cell["scenario"]
    if sc.get("dataset"):
        names, kwargs, single = [sc["dataset"]], sc.get("dataset_kwargs") or {}, True
    else:
        names, kwargs, single = list(sc["datasets"]), sc.get("dataset_kwargs") or {}, False
    if single:
        return [(names[0], dict(kwargs))]
    return [(n, dict(kwargs.get(n) or {})) for n in names]


#: bump when what a decode check finds changes (its entries are then ignored)
CHECK_VERSION = 1


def find_corrupt(cells: list[dict[str, Any]], progress: bool = True
                 ) -> dict[str, list[tuple[str, str]]]:
    """Decode every image of every real dataset the cells read, before any training:
    dataset name -> ``(path relative to its root, reason)`` of each broken file.

    A truncated JPEG is found only by decoding it whole, which costs about a minute per
    10k images, so a dataset's answer is kept in the cache folder, keyed by its files'
    paths, sizes and modification times: a rerun or another matrix on the same files
    checks nothing again, and a replaced file is checked anew.
    """
    import hashlib

    from benchmarks.cache import cache_dir
    from benchmarks.datasets import ImageListDataset, check_images, get_dataset

    broken: dict[str, list[tuple[str, str]]] = {}
    done: set[str] = set()
    for cell in cells:
        root = cell.get("data_root") or os.environ.get("LRBENCH_DATA")
        for name, kwargs in cell_datasets(cell):
            if name.partition(":")[0] == "synth-fg":
                continue  # generated in memory: no file to break
            seen = json.dumps([name, root, kwargs, cell.get("cache_dir")], sort_keys=True,
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
            entry = cache_dir(cell.get("cache_dir")) / "checks" / f"{ds.name}-{key}.json"
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


def mark_skipped(cells: list[dict[str, Any]], broken: dict[str, list[tuple[str, str]]]
                 ) -> None:
    """Mark ``cells`` to leave the ``broken`` files of their datasets out (their
    ``skip_files``), and rehash them: a cell run without some images is another cell."""
    from benchmarks.config import config_hash

    for cell in cells:
        skips = {name: sorted(p for p, _ in broken[name])
                 for name in sorted({n for n, _ in cell_datasets(cell)}) if name in broken}
        if skips:
            cell["skip_files"] = skips
            cell["hash"] = config_hash(cell)


def check_data(cells: list[dict[str, Any]], skip_corrupt: bool = False,
               progress: bool = True) -> dict[str, list[tuple[str, str]]]:
    """Everything about the cells' data that would fail them later, checked before any
    training: batch shapes (:func:`check_cells`), then broken images
    (:func:`find_corrupt`), refused, or with ``skip_corrupt`` left out of the cells
    (:func:`mark_skipped`, then the shapes again without them). Returns the broken files."""
    check_cells(cells)
    broken = find_corrupt(cells, progress)
    if broken and not skip_corrupt:
        raise corrupt_error(broken)
    if broken:
        mark_skipped(cells, broken)
        check_cells(cells)
    return broken


def uses_feature_cache(cell: dict[str, Any]) -> bool:
    """Whether a cell trains on cached stem features (a frozen stem, the cache not off)."""
    return bool((cell.get("cache") or {}).get("features", True)
                and cell["model"].get("frozen_stages", 0))


def check_cells(cells: list[dict[str, Any]]) -> None:
    """Refuse, before any training, cells whose batches cannot be drawn from their stream:
    P classes per batch need every experience to hold at least P classes (a one-line
    ``LrbenchError`` naming the experience and the largest P that fits)."""
    shapes: dict[str, Any] = {}
    for cell in cells:
        sc = cell["scenario"]
        key = json.dumps([sc, cell.get("data_root"), cell.get("skip_files")], sort_keys=True,
                         default=str)
        if key not in shapes:
            shapes[key] = build_benchmark(cell, info_only=True)
        info = shapes[key]
        p = cell["training"]["p"]
        small = min(info.experiences, key=lambda e: e.num_classes)
        if small.num_classes < p:
            raise LrbenchError(
                f"experience {small.index} of scenario {sc['name']!r} has "
                f"{small.num_classes} classes, fewer than P = {p} classes per batch "
                f"({cell['strategy']}); lower training.p to at most {small.num_classes}")


def build_model(cell: dict[str, Any], classifier: bool = False) -> Any:
    """The cell's ``EmbeddingNet`` (after ``seed_everything``, for its initial weights)."""
    from strategies.model import EmbeddingNet

    m = cell["model"]
    return EmbeddingNet(m["trunk"], dim=m["dim"], pool=m["pool"], pretrained=m["pretrained"],
                        freeze_bn=m["freeze_bn"], classifier=classifier,
                        frozen_stages=m.get("frozen_stages", 0))


def warm_caches(cells: list[dict[str, Any]], log: Callable[[str], None] = print) -> None:
    """Fill the on-disk caches the cells share, here, before any worker starts.

    Workers would otherwise fill them in one of them while the others wait on the entry's
    lock. Only seed-independent entries: decoded images, and the features of a pretrained
    frozen stem (a random stem differs per seed), computed with the cell's own
    ``training.threads`` (the feature cache is keyed by the thread count).
    """
    from strategies.template import seed_everything, torch_threads

    done: set[str] = set()
    for cell in cells:
        cache, m = cell.get("cache") or {}, cell["model"]
        stem = uses_feature_cache(cell) and m["pretrained"]
        if not (cache.get("images") or stem):
            continue
        key = json.dumps([cell["scenario"], m if stem else None, cache, cell.get("data_root"),
                          cell.get("skip_files"), cell.get("cache_dir"),
                          cell["training"].get("threads", 1) if stem else None],
                         sort_keys=True, default=str)
        if key in done:
            continue
        done.add(key)
        log(f"preparing caches for {cell['scenario']['name']} (once, shared by its cells)")
        seed_everything(int(cell["seed"]))
        try:  # with the cell's own thread count: the stem features are cached per count
            with torch_threads(cell["training"].get("threads", 1)):
                build_benchmark(cell, build_model(cell) if stem else None)
        except Exception as exc:  # the cells themselves fail with the reason, and go on
            log(f"could not prepare caches for {cell['scenario']['name']}: {exc}")


def make_loggers(logging: dict[str, bool] | None, folder: Path | None) -> list[Any]:
    """Avalanche's TensorBoard / CSV loggers writing into ``folder``, as asked."""
    if not logging or folder is None:
        return []
    out: list[Any] = []
    if logging.get("tensorboard"):
        from avalanche.logging import TensorboardLogger

        out.append(TensorboardLogger(tb_log_dir=str(folder / "tensorboard")))
    if logging.get("csv"):
        from avalanche.logging import CSVLogger

        out.append(CSVLogger(log_folder=str(folder / "avalanche_csv")))
    return out


def run_cell(cell: dict[str, Any], checkpoint: Path | None = None,
             log: Callable[[str], None] = print, logging: dict[str, bool] | None = None,
             folder: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one cell; return its metric payload (raises on failure).

    ``logging`` asks for Avalanche loggers, written into ``folder`` (the cell's folder).
    The cell computes with its own ``training.threads`` intra-op threads, whatever process
    runs it, so its numbers never depend on ``--jobs``, the executor or the host.
    """
    from strategies.template import torch_threads

    with torch_threads(cell["training"].get("threads", 1)):
        return _run_cell(cell, checkpoint, log, logging, folder)


def _run_cell(cell: dict[str, Any], checkpoint: Path | None, log: Callable[[str], None],
              logging: dict[str, bool] | None, folder: Path | None) -> dict[str, Any]:
    import torch

    from metrics import forgetting
    from metrics.plugins import RetrievalMetrics
    from strategies import make_plugin
    from strategies.losses import make_metric_loss, trainable_parameters
    from strategies.template import RetrievalTemplate, seed_everything

    t0 = time.perf_counter()
    seed = int(cell["seed"])
    seed_everything(seed)
    plugin = make_plugin(cell.get("plugin", cell["strategy"]), cell["hparams"])
    m, tr, ev = cell["model"], cell["training"], cell["evaluation"]
    model = build_model(cell, classifier=plugin.needs_classifier)
    bench = build_benchmark(cell, model)
    n_exp = len(bench.train_stream)
    n_classes = sum(e.num_classes for e in bench.stream_info.experiences)
    criterion = make_metric_loss(tr["loss"], tr["margin"], m["dim"], n_classes)
    params = trainable_parameters(model, criterion)  # a loss's proxies train too
    # foreach: one kernel per operation over all parameters (the default only on CUDA);
    # the same update, a third off a CPU training step of the thesis model
    if tr["optimizer"] == "adam":
        opt = torch.optim.Adam(params, lr=tr["lr"], weight_decay=tr["weight_decay"],
                               foreach=True)
    else:
        opt = torch.optim.SGD(params, lr=tr["lr"], momentum=tr["momentum"],
                              weight_decay=tr["weight_decay"], foreach=True)
    metrics = RetrievalMetrics(ks=ev["ks"], map_at_r=ev["map_at_r"],
                               cross_model=ev["cross_model"])
    tpl = RetrievalTemplate(model=model, optimizer=opt, criterion=criterion, p=tr["p"],
                            k=tr["k"], iterations=tr["iterations"], epochs=tr["epochs"],
                            eval_mb_size=tr["eval_mb_size"], device=tr["device"],
                            plugins=[plugin], metrics=metrics, seed=seed,
                            loggers=make_loggers(logging, folder),
                            max_grad_norm=tr.get("max_grad_norm", 1e4))
    if checkpoint is not None and checkpoint.is_file():
        tpl.load_checkpoint(checkpoint)
        log(f"resumed from {checkpoint.name} after {tpl.experiences_done}/{n_exp} experiences")
    k0 = min(ev["ks"])  # the headline K: Recall@1 unless the matrix leaves K = 1 out
    timings = []
    while tpl.experiences_done < n_exp:
        start = time.perf_counter()
        tpl.run(bench, checkpoint=checkpoint, stop_after=tpl.experiences_done + 1)
        timings.append(time.perf_counter() - start)
        done = tpl.experiences_done
        eta = (n_exp - done) * sum(timings) / len(timings)
        log(f"{cell['strategy']} {cell['scenario']['name']} seed {seed}: experience "
            f"{done - 1} of 0-{n_exp - 1} trained, R@{k0} on the seen-classes gallery "
            f"{metrics.seen_curve(k0)[done - 1]:.3f}, ETA {eta:.0f}s")
    r = {str(k): metrics.r_matrix(k).tolist() for k in ev["ks"]}
    seen = metrics.seen_curve(k0)
    losses = tpl.loss_summary()
    warnings = quiet_terms(losses, plugin.regularizer)
    for line in warnings:
        log(f"warning: {line}")
    payload: dict[str, Any] = {
        "num_experiences": n_exp,
        "r_matrix": {"recall": r},
        "seen": {"recall": {str(k): metrics.seen_curve(k).tolist() for k in ev["ks"]}},
        "summary": {"k": k0, "final_seen": float(seen[-1]),
                    "avg_incremental_seen": float(seen.mean()),
                    **forgetting(metrics.r_matrix(k0))},
        "losses": losses,
        "warnings": warnings,
        "timings": {"total_s": time.perf_counter() - t0, "per_experience_s": timings},
    }
    if ev["map_at_r"]:
        payload["r_matrix"]["map_at_r"] = metrics.r_matrix(metric="map_at_r").tolist()
        payload["seen"]["map_at_r"] = metrics.seen_curve(metric="map_at_r").tolist()
    if ev["cross_model"]:
        payload["cross_model"] = {str(k): metrics.cross_model_matrix(k).tolist()
                                  for k in ev["ks"]}
    return _json_safe(payload)


def quiet_terms(losses: dict[str, list[float | None]], regularizer: bool) -> list[str]:
    """Warnings for regularisers that did nothing: a plugin term that is exactly zero in
    every experience from the second on, or (for a strategy declared a regulariser) no
    term added at all after the first experience."""
    out = []
    terms = [t for t in losses if t not in ("steps", "metric", "total")]
    for term in terms:
        later = [v for v in losses[term][1:] if v is not None]
        if later and all(v == 0.0 for v in later):
            out.append(f"loss term {term!r} stayed exactly 0 in every experience after the "
                       "first: the regulariser is inactive (check its data and weights)")
    if regularizer and len(losses.get("steps", [])) > 1 and not any(
            v is not None for t in terms for v in losses[t][1:]):
        out.append("the strategy is a regulariser but added no loss term after the first "
                   "experience")
    return out


def check_determinism(cell: dict[str, Any], log: Callable[[str], None] = print
                      ) -> list[str]:
    """Run ``cell`` twice in this process; the metric values that differ (empty: none)."""
    first = run_cell(cell, log=log)
    second = run_cell(cell, log=log)
    diffs = []
    for section in ("r_matrix", "seen", "summary"):
        a, b = first.get(section), second.get(section)
        if a != b:
            diffs.append(f"{section}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}")
    return diffs


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _worker(cell: dict[str, Any], checkpoint: str | None = None,
            logging: dict[str, bool] | None = None, folder: str | None = None) -> dict[str, Any]:
    """Run a cell in a worker process; never raises (a failure is a result)."""
    import warnings

    # spawned workers do not inherit the CLI's warning filters (Avalanche's import chatter)
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(msg)
        print(msg, file=sys.stderr, flush=True)

    try:
        payload = run_cell(cell, Path(checkpoint) if checkpoint else None, log, logging,
                           Path(folder) if folder else None)
        return {"status": "finished", "payload": payload, "log": lines}
    except Exception as exc:  # a failed cell is recorded; the matrix goes on
        lines.append(traceback.format_exc())
        reason = f"{type(exc).__name__}: {exc}".strip()
        return {"status": "failed", "reason": reason.splitlines()[0][:500], "log": lines}


# -- the matrix -----------------------------------------------------------------------------
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
    for metric, by_k in payload["seen"].items():
        curves = by_k.items() if isinstance(by_k, dict) else [("", by_k)]
        for k, curve in curves:
            for i, v in enumerate(curve):
                if v is not None:
                    rows.append({**base, "train_exp": i, "eval_exp": "seen", "metric": metric,
                                 "k": k, "value": v})
    return rows


def write_tidy(store: Path) -> int:
    """Rebuild ``results.csv`` and ``results.parquet`` from every finished ``result.json``.

    Returns the number of rows. ``k`` is text (empty for mAP@R) and ``eval_exp`` too
    (``seen`` marks the union of seen experiences), in both files.
    """
    rows: list[dict[str, Any]] = []
    for path in sorted((store / "cells").glob("*/result.json")):
        result = json.loads(path.read_text())
        if result.get("status") == "finished":
            rows += tidy_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TIDY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(store / "results.csv", buf.getvalue())
    import pandas as pd

    frame = pd.DataFrame(rows, columns=TIDY_COLUMNS).astype(
        {"k": str, "eval_exp": str, "value": float})
    tmp = store / f".results.parquet.{os.getpid()}.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, store / "results.parquet")
    return len(rows)


def finished(cell_dir: Path, cell: dict[str, Any],
             older: Callable[[str], bool] | None = None) -> bool:
    """Whether ``cell_dir`` holds a finished result of exactly this cell config (and, with
    ``older``, one whose lrbench commit ``older`` does not call too old)."""
    path = cell_dir / "result.json"
    if not path.is_file():
        return False
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(result, dict):
        return False
    ok = result.get("status") == "finished" and result.get("config_hash") == cell["hash"]
    if ok and older is not None:
        commit = (result.get("versions") or {}).get("lrbench_commit", "unknown")
        ok = not older(str(commit))
    return ok


def older_than(commit: str) -> Callable[[str], bool]:
    """A test for "computed by an lrbench commit older than ``commit``": an ancestor of
    it in this repository's history, or a commit git cannot place (unknown, another
    history). A one-line error when ``commit`` itself is not a commit here."""
    repo = Path(__file__).resolve().parents[1]

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


def final_line(summary: dict[str, Any]) -> str:
    """One cell's headline, each number named for its gallery."""
    k = summary["k"]

    def num(v: float | None) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{v:.3f}"

    seen = (f"final R@{k} seen-classes gallery {num(summary['final_seen'])}, "
            if "final_seen" in summary else "")
    return (f"{seen}final R@{k} per-task mean {num(summary['final_mean'])}, "
            f"forgetting {num(summary['forgetting'])}")


def _run_on_ray(cells: list[dict[str, Any]], record: Callable[..., None],
                address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise LrbenchError("the ray executor needs Ray: pip install 'lrbench[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(_worker)
    refs = {}
    for cell in cells:
        gpus = 1 if str(cell["training"]["device"]).startswith("cuda") else 0
        cpus = cell["training"].get("threads", 1)
        ref = task.options(num_cpus=cpus, num_gpus=gpus).remote(cell)
        refs[ref] = (cell, time.time())
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        cell, started = refs[done[0]]
        record(cell, ray.get(done[0]), started)


def prepare_store(out: str | Path, config: MatrixConfig, force: bool = False,
                  resume: bool = False) -> Path:
    """The results folder, created and checked writable, and not holding another matrix
    (unless ``force`` or ``resume``); a one-line ``LrbenchError`` otherwise."""
    store = Path(out)
    try:
        store.mkdir(parents=True, exist_ok=True)
        probe = store / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise LrbenchError(f"cannot write to results folder {str(store)!r} ({exc.strerror}); "
                           "fix its permissions or choose another --out") from None
    check_store(store, config, force, resume)
    return store


def same_matrix(stored: str, config: MatrixConfig) -> bool:
    """Whether a store's ``matrix.yaml`` is ``config``: compared once both are resolved
    with today's defaults, so a setting added to lrbench since the store was written does
    not make it "another matrix" (its cells' hashes still decide what reruns)."""
    import yaml

    from benchmarks.config import parse_config

    new = resolved_yaml(config)
    if stored == new:
        return True
    try:
        old = parse_config(yaml.safe_load(stored), "matrix.yaml", registries=False)
    except (LrbenchError, yaml.YAMLError, TypeError, ValueError):
        return False
    return resolved_yaml(old) == new


def check_store(store: Path, config: MatrixConfig, force: bool, resume: bool) -> None:
    """Refuse a store that holds a different matrix unless told to overwrite or resume."""
    existing = store / "matrix.yaml"
    if existing.is_file() and not same_matrix(existing.read_text(), config) and not (
            force or resume):
        raise LrbenchError(
            f"{str(store)!r} holds a different matrix; use --resume to keep its finished "
            "cells that still match, --force to start over, or another --out")


def run_matrix(config: MatrixConfig, out: str | Path, jobs: int = 1, force: bool = False,
               resume: bool = False, checkpoints: bool = False, progress: bool = True,
               executor: str = "local", ray_address: str | None = None,
               skip_corrupt: bool = False, rerun_before: str | None = None
               ) -> dict[str, Any]:
    """Run every cell not yet finished; return counts of finished/skipped/failed cells.

    Every image of the real datasets is decoded once first (:func:`find_corrupt`): a
    broken one refuses the matrix, or with ``skip_corrupt`` is left out of every cell that
    reads it (recorded in each cell's config and in ``skipped.json``).

    ``rerun_before`` (a git commit) recomputes finished cells that an older lrbench
    commit computed (see :func:`older_than`).

    ``executor="local"`` runs ``jobs`` processes here; ``"ray"`` submits one Ray task per
    cell (1 CPU, and 1 GPU when the cell trains on CUDA) to the cluster at ``ray_address``
    (or a local one, or the one already initialised); results travel back to this process,
    so workers need no shared disk.
    """
    from tqdm import tqdm

    if executor not in ("local", "ray"):
        raise LrbenchError(f"unknown executor {executor!r}; use local or ray")
    if executor == "ray" and (checkpoints or config.logging.tensorboard or config.logging.csv):
        raise LrbenchError("--checkpoints and logging need the local executor (Ray workers "
                           "share no disk with the store); drop one or the other")
    older = older_than(rerun_before) if rerun_before else None
    cells = expand_cells(config)
    broken = check_data(cells, skip_corrupt, progress)
    store = prepare_store(out, config, force, resume)
    counts = {"finished": 0, "skipped": 0, "failed": 0}
    with store_lock(store):
        atomic_write(store / "matrix.yaml", resolved_yaml(config))
        if broken:
            atomic_write(store / "skipped.json", json.dumps(
                {name: [{"path": p, "reason": why} for p, why in bad]
                 for name, bad in sorted(broken.items())}, indent=1))
            n_bad = sum(len(b) for b in broken.values())
            print(f"--skip-corrupt: leaving out {n_bad} image(s) that cannot be decoded "
                  f"(listed in {store / 'skipped.json'})", file=sys.stderr)
        else:
            (store / "skipped.json").unlink(missing_ok=True)
        todo = []
        for cell in cells:
            if not force and finished(store / "cells" / cell["id"], cell, older):
                counts["skipped"] += 1
            else:
                todo.append(cell)
        host = {"hostname": socket.gethostname(), "platform": platform.platform(),
                "cpus": os.cpu_count()}
        vers = versions()
        bar = tqdm(total=len(cells), initial=counts["skipped"], desc=config.name, unit="cell",
                   disable=not progress)

        def record(cell: dict[str, Any], outcome: dict[str, Any], started: float) -> None:
            cell_dir = store / "cells" / cell["id"]
            result = {"id": cell["id"], "config_hash": cell["hash"],
                      "hash_version": HASH_VERSION, "config": cell,
                      "status": outcome["status"], "started": started,
                      "ended": time.time(), "versions": vers, "host": host}
            if outcome["status"] == "finished":
                result["payload"] = outcome["payload"]
                summary = outcome["payload"]["summary"]
                bar.write(f"done   {cell['id']}: {final_line(summary)}")
            else:
                result["reason"] = outcome["reason"]
                bar.write(f"FAILED {cell['id']}: {outcome['reason']}")
            atomic_write(cell_dir / "log.txt", "\n".join(outcome["log"]) + "\n")
            atomic_write(cell_dir / "result.json", json.dumps(result, indent=1))
            counts[outcome["status"]] += 1
            bar.update(1)

        def ckpt(cell: dict[str, Any]) -> str | None:
            return str(store / "cells" / cell["id"] / "checkpoint.pt") if checkpoints else None

        logging = config.logging.model_dump()

        def folder(cell: dict[str, Any]) -> str:
            return str(store / "cells" / cell["id"])

        if executor == "local" and todo:
            warm_caches(todo, bar.write)

        try:
            if executor == "ray":
                _run_on_ray(todo, record, ray_address)
            elif jobs <= 1:
                for cell in todo:
                    started = time.time()
                    record(cell, _worker(cell, ckpt(cell), logging, folder(cell)),
                           started)
            else:
                _run_pool(todo, jobs, record, lambda c: (ckpt(c), logging, folder(c)))
        except KeyboardInterrupt:
            # first Ctrl-C: running cells stop, finished ones are already on disk; rebuild
            # the tidy table and release the lock. A second Ctrl-C stops this at once; the
            # store still resumes (every file is written atomically, a stale lock is cleared)
            bar.write("interrupted: finished cells are kept; rerun the same command to resume "
                      "(Ctrl-C again to stop at once)", file=sys.stderr)
            bar.close()
            write_tidy(store)
            raise
        bar.close()
        counts["rows"] = write_tidy(store)
    return counts


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops


def _run_pool(todo: list[dict[str, Any]], jobs: int, record: Callable[..., None],
              args: Callable[[dict[str, Any]], tuple[Any, ...]]) -> None:
    """Run cells in ``jobs`` spawned processes; on Ctrl-C stop them and re-raise."""
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_ignore_sigint) as ex:
        futures = {ex.submit(_worker, c, *args(c)): (c, time.time()) for c in todo}
        try:
            for fut in as_completed(futures):
                cell, started = futures[fut]
                record(cell, fut.result(), started)
        except KeyboardInterrupt:
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
            ex.shutdown(wait=False, cancel_futures=True)
            raise
