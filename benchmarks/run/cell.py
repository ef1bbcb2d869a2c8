"""One cell: its model and benchmark built, trained and evaluated, its outcome returned.

Everything that happens inside a cell, wherever it runs: the versions its numbers depend
on, the model and the benchmark (through the caches the cell asks for), the shared caches
warmed before workers start, the training and evaluation themselves (:func:`run_cell`), and
:func:`_worker`, the function every executor calls, which turns a cell into an outcome
that never raises. A cell computes with its own ``training.threads``, so its numbers never
depend on the executor, ``--jobs`` or the host. Nothing here touches the results store.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.run.provenance import machine
from benchmarks.run.signals import interrupted, note_signals  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from benchmarks.config import Cell


def uses_feature_cache(cell: Cell) -> bool:
    """Whether a cell trains on cached stem features (a frozen stem, the cache not off)."""
    return bool(cell.cache.features and cell.model.frozen_stages)


def build_benchmark(cell: Cell, model: Any = None, info_only: bool = False) -> Any:
    """The Avalanche benchmark of a cell's scenario, through the caches the cell asks for
    (the frozen-stem feature cache needs the cell's ``model``); with ``info_only`` only
    its ``StreamInfo`` (no Avalanche, no cache, nothing decoded)."""
    from benchmarks.run.cache import cached_pair
    from benchmarks.streams import class_incremental, lifelong

    sc = cell.scenario
    root = cell.data_root or os.environ.get("LRBENCH_DATA")
    stem = model if uses_feature_cache(cell) else None
    skips = cell.skip_files or {}
    caching = not info_only and (stem is not None or cell.cache.images)
    wrap = None
    if caching or skips:
        def wrap(train: Any, test: Any, image_size: int, generated: bool) -> tuple[Any, Any]:
            if getattr(train, "name", None) in skips:  # --skip-corrupt: broken files left out
                train, test = (d.without(skips[d.name]) for d in (train, test))
            if not caching:
                return train, test
            return cached_pair(train, test, image_size, generated, images=True, model=stem,
                               views=cell.cache.views, root=cell.cache.dir)
    kw: dict[str, Any] = {"wrap": wrap, "info_only": info_only,
                          "validation": sc.validation}
    if sc.dataset:
        order = cell.seed if sc.order == "seed" else sc.order
        return class_incremental(sc.dataset, sc.schedule, root=root, order=order,
                                 image_size=sc.image_size,
                                 dataset_kwargs=dict(sc.dataset_kwargs), **kw)
    return lifelong(sc.datasets, root=root, image_size=sc.image_size,
                    dataset_kwargs=dict(sc.dataset_kwargs), **kw)


def build_model(cell: Cell, classifier: bool = False, projection: bool = True) -> Any:
    """The cell's ``EmbeddingNet`` (after ``seed_everything``, for its initial weights);
    ``projection=False``: no embedding layer, the pooled trunk features are the embedding
    (a strategy's ``pooled_embedding``)."""
    from strategies.model import EmbeddingNet

    m = cell.model
    return EmbeddingNet(m.trunk, dim=m.dim, pool=m.pool, pretrained=m.pretrained,
                        freeze_bn=m.freeze_bn, classifier=classifier,
                        frozen_stages=m.frozen_stages, projection=projection,
                        weights=m.weights)


def make_optimizer(model: Any, criterion: Any, tr: Any) -> Any:
    """The cell's optimizer (``training``: Adam or SGD) over the model's and the
    criterion's trainable parameters. With ``trunk_lr_mult`` other than 1 the trunk's
    trained layers (``model.trunk``: pretrained layers when the model loads weights) get
    ``lr * trunk_lr_mult`` in a second parameter group, everything else (the projection,
    a classifier, a loss's proxies: the new layers) ``lr``: SLCA's slow learner. Group 0
    holds the new layers, so parameters Avalanche adds later (a grown classifier) join
    them. At 1 there is one group, as before the option existed."""
    import torch

    from strategies.losses import trainable_parameters

    params = trainable_parameters(model, criterion)  # a loss's proxies train too
    groups: Any = params
    if tr.trunk_lr_mult != 1.0:
        # Avalanche maps every model parameter to a group by identity (a frozen stem's
        # too, which a single group receives silently): group 0 takes all but the trunk
        trunk = {id(p) for p in model.trunk.parameters()}
        owned = list(criterion.parameters()) if isinstance(criterion, torch.nn.Module) else []
        rest = list({id(p): p for p in (*model.parameters(), *owned)
                     if id(p) not in trunk}.values())
        groups = [{"params": rest},
                  {"params": [p for p in params if id(p) in trunk],
                   "lr": tr.lr * tr.trunk_lr_mult}]
        groups = [g for g in groups if g["params"]]
    # foreach: one kernel per operation over all parameters (the default only on CUDA);
    # the same update, a third off a CPU training step of the thesis model
    if tr.optimizer == "adam":
        return torch.optim.Adam(groups, lr=tr.lr, weight_decay=tr.weight_decay, foreach=True)
    return torch.optim.SGD(groups, lr=tr.lr, momentum=tr.momentum,
                           weight_decay=tr.weight_decay, foreach=True)


def warm_caches(cells: list[Cell], log: Callable[[str], None] = print) -> None:
    """Fill the on-disk caches the cells share, here, before any worker starts.

    Workers would otherwise fill them in one of them while the others wait on the entry's
    lock. Only seed-independent entries: decoded images, and the features of a pretrained
    frozen stem (a random stem differs per seed), computed with the cell's own
    ``training.threads`` (the feature cache is keyed by the thread count).
    """
    from strategies.template import seed_everything, torch_threads

    done: set[str] = set()
    for cell in cells:
        stem = uses_feature_cache(cell) and cell.model.pretrained
        if not (cell.cache.images or stem):
            continue
        key = json.dumps([cell.scenario.model_dump(), cell.model.model_dump() if stem else None,
                          cell.cache.model_dump(), cell.data_root, cell.skip_files,
                          cell.training.threads if stem else None],
                         sort_keys=True, default=str)
        if key in done:
            continue
        done.add(key)
        log(f"preparing caches for {cell.scenario.name} (once, shared by its cells)")
        seed_everything(cell.seed)
        try:  # with the cell's own thread count: the stem features are cached per count
            with torch_threads(cell.training.threads):
                build_benchmark(cell, build_model(cell) if stem else None)
        except Exception as exc:  # the cells themselves fail with the reason, and go on
            log(f"could not prepare caches for {cell.scenario.name}: {exc}")


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


def run_cell(cell: Cell, checkpoint: Path | None = None,
             log: Callable[[str], None] = print, logging: dict[str, bool] | None = None,
             folder: Path | None = None, first: Path | None = None,
             save_first: bool = False, trained: Path | None = None,
             save_trained: bool = False, first_loop: Path | None = None,
             save_first_loop: bool = False) -> dict[str, Any]:
    """Train and evaluate one cell; return its metric payload (raises on failure).

    ``logging`` asks for Avalanche loggers, written into ``folder`` (the cell's folder).
    ``first`` is the checkpoint of the first experience shared by the cells with this
    cell's :attr:`~benchmarks.config.Cell.first_experience_key`: when it exists (and the
    cell's own ``checkpoint`` does not) the cell resumes from it instead of training that
    experience; when it does not, the cell writes it after its first experience if
    ``save_first``. ``trained`` is the folder where the cells with this cell's
    :attr:`~benchmarks.config.Cell.training_key` share each experience's training loop
    (:class:`strategies.checkpoints.SharedTraining`): a loop another cell ran is loaded, one
    that is not there is run and, with ``save_trained``, written; ``first_loop`` and
    ``save_first_loop`` likewise for the first loop shared across strategies
    (:attr:`~benchmarks.config.Cell.first_loop_key`). The cell computes with its own
    ``training.threads`` intra-op threads in any process: its numbers never depend on
    ``--jobs``, the executor or the host.
    """
    from strategies.template import torch_threads

    with torch_threads(cell.training.threads):
        return _run_cell(cell, checkpoint, log, logging, folder, first, save_first, trained,
                         save_trained, first_loop, save_first_loop)


@dataclass
class Built:
    """A cell ready to train: its plugin, its benchmark and the template that runs it."""

    plugin: Any
    benchmark: Any
    template: Any


def build_cell(cell: Cell, loggers: list[Any] | None = None) -> Built:
    """Everything one cell trains with, built in the one order its numbers depend on:
    seeded, then its strategy plugin, model (initial weights), benchmark (through the
    caches it asks for), metric loss, optimizer, retrieval metrics and template. The
    runner and the contract kit (:mod:`benchmarks.contract`) both build cells here."""
    from metrics.plugins import RetrievalMetrics
    from strategies import make_plugin
    from strategies.losses import make_metric_loss
    from strategies.template import RetrievalTemplate, seed_everything

    seed_everything(cell.seed)
    plugin = make_plugin(cell.plugin_name, cell.hparams)
    tr, ev = cell.training, cell.evaluation
    model = build_model(cell, classifier=plugin.needs_classifier,
                        projection=not plugin.pooled_embedding)
    bench = build_benchmark(cell, model)
    n_classes = sum(e.num_classes for e in bench.stream_info.experiences)
    criterion = make_metric_loss(tr.loss, tr.margin, model.dim, n_classes)
    opt = make_optimizer(model, criterion, tr)
    metrics = RetrievalMetrics(ks=ev.ks, map_at_r=ev.map_at_r, cross_model=ev.cross_model,
                               never_reindexed=ev.never_reindexed,
                               compatibility=ev.compatibility)
    tpl = RetrievalTemplate(model=model, optimizer=opt, criterion=criterion, p=tr.p,
                            k=tr.k, iterations=tr.iterations, epochs=tr.epochs,
                            eval_mb_size=tr.eval_mb_size, device=tr.device,
                            plugins=[plugin], metrics=metrics, seed=cell.seed,
                            loggers=loggers or [], max_grad_norm=tr.max_grad_norm,
                            amp=tr.amp, channels_last=tr.channels_last)
    return Built(plugin, bench, tpl)


def _run_cell(cell: Cell, checkpoint: Path | None, log: Callable[[str], None],
              logging: dict[str, bool] | None, folder: Path | None, first: Path | None = None,
              save_first: bool = False, trained: Path | None = None, save_trained: bool = False,
              first_loop: Path | None = None, save_first_loop: bool = False) -> dict[str, Any]:
    from metrics import forgetting
    from strategies.checkpoints import SharedTraining

    t0 = time.perf_counter()
    seed = cell.seed
    built = build_cell(cell, make_loggers(logging, folder))
    plugin, bench, tpl = built.plugin, built.benchmark, built.template
    metrics, ev = tpl.metrics, cell.evaluation
    n_exp = len(bench.train_stream)
    shared = False
    if checkpoint is not None and checkpoint.is_file():
        tpl.load_checkpoint(checkpoint)
        log(f"resumed from {checkpoint.name} after {tpl.experiences_done}/{n_exp} experiences")
    elif first is not None and first.is_file():
        try:
            tpl.load_checkpoint(first)
            if tpl.experiences_done != 1:
                raise ValueError(f"it holds {tpl.experiences_done} experiences, not one")
            shared = True
            log(f"first experience shared: resumed from {first.name} (written by a cell that "
                "differs from this one only in hyperparameters its strategy declares "
                "inactive there)")
        except Exception as exc:  # unreadable or gone: only a shortcut, so train it here
            log(f"note: the shared first experience {first.name} could not be used "
                f"({type(exc).__name__}: {exc}); training it in this cell")
            built = build_cell(cell, make_loggers(logging, folder))  # loading changed it
            plugin, bench, tpl = built.plugin, built.benchmark, built.template
            metrics = tpl.metrics
    if trained is not None or first_loop is not None:
        tpl.shared_training = SharedTraining(trained, save_trained, log, first_loop,
                                             save_first_loop)
    resumed = tpl.experiences_done
    k0 = min(ev.ks)  # the headline K: Recall@1 unless the matrix leaves K = 1 out
    timings = []
    while tpl.experiences_done < n_exp:
        start = time.perf_counter()
        tpl.run(bench, checkpoint=checkpoint, stop_after=tpl.experiences_done + 1)
        timings.append(time.perf_counter() - start)
        done = tpl.experiences_done
        loops = tpl.shared_training
        if loops is not None and done - 1 in loops.loaded:
            how = "that loop alike (first_loop_as)" if loops.crossed(done - 1) else "alike"
            log(f"experience {done - 1}: its training loop loaded, run by a cell that trains {how}")
        if done == 1 and first is not None and save_first and not first.is_file():
            try:  # atomic: a cell starting now sees all of it or none
                tpl.save_checkpoint(first)
            except OSError as exc:  # a full disk costs the others time, not this cell
                log(f"note: could not write the shared first experience {first.name} "
                    f"({exc.strerror or exc}); the cells that would use it train it themselves")
        eta = (n_exp - done) * sum(timings) / len(timings)
        log(f"{cell.strategy} {cell.scenario.name} seed {seed}: experience "
            f"{done - 1} of 0-{n_exp - 1} trained, R@{k0} on the seen-classes gallery "
            f"{metrics.seen_curve(k0)[done - 1]:.3f}, ETA {eta:.0f}s")
    r = {str(k): metrics.r_matrix(k).tolist() for k in ev.ks}
    seen = metrics.seen_curve(k0)
    losses = tpl.loss_summary()
    warnings = quiet_terms(losses, plugin.regularizer)
    for line in warnings:
        log(f"warning: {line}")
    payload: dict[str, Any] = {
        "num_experiences": n_exp,
        "r_matrix": {"recall": r},
        "seen": {"recall": {str(k): metrics.seen_curve(k).tolist() for k in ev.ks}},
        "summary": {"k": k0, "final_seen": float(seen[-1]),
                    "avg_incremental_seen": float(seen.mean()),
                    **forgetting(metrics.r_matrix(k0))},
        "losses": losses,
        "warnings": warnings,
        # a resumed cell times only what it trained: experiences ``resumed_after`` on
        "timings": {"total_s": time.perf_counter() - t0, "per_experience_s": timings,
                    "resumed_after": resumed, "shared_first_experience": shared,
                    # the loops loaded from a cell that trains alike, and the seconds they
                    # took there (not in total_s: the report adds them to the cell's cost)
                    "shared_training": (list(tpl.shared_training.loaded)
                                        if tpl.shared_training is not None else []),
                    "shared_training_s": (tpl.shared_training.loaded_s
                                          if tpl.shared_training is not None else 0.0)},
    }
    if getattr(tpl.model, "weights_record", None):  # pretrained: true: what was loaded
        payload["weights"] = tpl.model.weights_record
    if ev.map_at_r:
        payload["r_matrix"]["map_at_r"] = metrics.r_matrix(metric="map_at_r").tolist()
        payload["seen"]["map_at_r"] = metrics.seen_curve(metric="map_at_r").tolist()
    if ev.cross_model:
        payload["cross_model"] = {str(k): metrics.cross_model_matrix(k).tolist()
                                  for k in ev.ks}
    # the never-re-indexed gallery and the compatibility matrix (metrics.gallery)
    payload.update(metrics.gallery.payload(n_exp))
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


#: what ``--check-determinism`` compares: every metric value a cell records (of the
#: compatibility section the matrices M and S, not the summaries derived from them, whose
#: names have changed between versions)
COMPARED = ("r_matrix", "seen", "summary", "losses", "never_reindexed", "cross_model",
            "compatibility.matrix", "compatibility.self_test")


def _section(payload: dict[str, Any], name: str) -> Any:
    head, _, tail = name.partition(".")
    value = payload.get(head)
    return (value or {}).get(tail) if tail else value


def check_determinism(cell: Cell, log: Callable[[str], None] = print,
                      stored: dict[str, Any] | None = None) -> list[str]:
    """Run ``cell`` twice in this process; the sections of :data:`COMPARED` that differ
    (empty: none). With ``stored`` (the payload of the cell's finished ``result.json``)
    the first run is also compared with it, prefixed ``store:``: a store computed by
    another code version or on another kind of CPU shows here."""
    first = json.loads(json.dumps(run_cell(cell, log=log)))  # as result.json holds it
    second = json.loads(json.dumps(run_cell(cell, log=log)))
    diffs = []
    for other, prefix in ((second, ""), (stored, "store: ")):
        for section in COMPARED if other is not None else ():
            a, b = _section(first, section), _section(other, section)
            if a != b:
                diffs.append(f"{prefix}{section}: {json.dumps(a)[:200]} != "
                             f"{json.dumps(b)[:200]}")
    return diffs


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def final_line(summary: dict[str, Any]) -> str:
    """One cell's headline, each number named for its gallery."""
    k = summary["k"]

    def num(v: float | None) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{v:.3f}"

    seen = (f"final R@{k} seen-classes gallery {num(summary['final_seen'])}, "
            if "final_seen" in summary else "")
    return (f"{seen}final R@{k} per-task mean {num(summary['final_mean'])}, "
            f"forgetting {num(summary['forgetting'])}")


def _worker(cell: Cell, checkpoint: str | None = None,
            logging: dict[str, bool] | None = None, folder: str | None = None,
            first: str | None = None, save_first: bool = False,
            trained: str | None = None, save_trained: bool = False,
            first_loop: str | None = None, save_first_loop: bool = False) -> dict[str, Any]:
    """Run a cell in a worker process; never raises (a failure is a result). The
    arguments after the cell are :func:`run_cell`'s, paths as text. The outcome carries
    ``started``, when this worker began the cell: a pool or cluster queues cells long
    before a worker takes them, so the submitting process cannot know it."""
    import warnings

    started = time.time()

    # spawned workers do not inherit the CLI's warning filters (Avalanche's import chatter)
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    lines: list[str] = []
    base = {"log": lines, "started": started, "machine": machine()}

    def log(msg: str) -> None:
        lines.append(msg)
        print(msg, file=sys.stderr, flush=True)

    try:
        payload = run_cell(cell, Path(checkpoint) if checkpoint else None, log, logging,
                           Path(folder) if folder else None, Path(first) if first else None,
                           save_first, Path(trained) if trained else None, save_trained,
                           Path(first_loop) if first_loop else None, save_first_loop)
        return {"status": "finished", "payload": payload, **base}
    except BaseException as exc:  # a failed cell is recorded; the matrix goes on
        if isinstance(exc, KeyboardInterrupt) and interrupted():
            raise  # Ctrl-C or SIGTERM of this process: the run stops (its cells are kept)
        lines.append(traceback.format_exc())
        return {"status": "failed", "reason": failure_reason(exc), **base}


def failure_reason(exc: BaseException) -> str:
    """One line on why a cell failed. ``SystemExit`` and a ``KeyboardInterrupt`` that no
    signal sent (raised by a plugin, or a library it calls) are failures of the cell's
    code, said so: they must not end the run with exit 0 nor lose other cells."""
    reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(exc, SystemExit):
        reason = (f"SystemExit({exc.code!r}): the cell's code (its strategy plugin, or a "
                  "library it calls) tried to exit the process")
    elif isinstance(exc, KeyboardInterrupt):
        reason = ("KeyboardInterrupt raised by the cell's code (its strategy plugin, or a "
                  "library it calls), not by a signal")
    return (reason.splitlines() or [type(exc).__name__])[0][:500]


