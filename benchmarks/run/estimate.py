"""The expected wall time of a matrix, for ``lrbench run --dry-run``: measured here, and
estimated for a GPU.

How (each cell, then summed; cells run one at a time, ``--jobs N`` divides it by up to N):

* **this machine**: a training step of the cell's model (its trunk, randomly initialised:
  the same cost as its weights), on random images of its size, with its optimizer and
  ``training.threads``, is timed here on up to 16 images (one warm-up step, then the
  median of 2), and an inference pass likewise; a frozen, cached stem is run once and the
  steps and passes timed on its output, as a cell trains and evaluates from the cache.
  The cell's time is its optimisation steps x P x K images at the measured training
  rate, plus its evaluations (after each
  experience every test image of the stream is embedded) at the inference rate;
* **a GPU**: the floating-point operations of one training image (forward and backward)
  and one inference image are counted (``torch.utils.flop_counter``), and divided by a
  sustained rate *assumed*, not measured (no GPU was lent to this work):
  :data:`GPU_TFLOPS` for bfloat16 autocast (``training.amp``) and float32, capped at
  :data:`GPU_LOAD_RATE` images/s that one data-loading process delivers. A ResNet-50
  trained in bfloat16 on an H100 runs about 3,000 images/s at 12.3 GFLOP each, about 37
  TFLOP/s sustained. ``tools/gpu-check.sh`` measures the real rate on a GPU.

What is not counted: a strategy's extra passes (a teacher's forward, DKD's synthesis),
the feature caches' first fill and image decoding on this machine; the numbers are what a
plan needs, not a promise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.config import Cell

#: the sustained TFLOP/s assumed for a GPU (an H100): bfloat16 autocast, float32 (TF32)
GPU_TFLOPS = {"bf16": 40.0, "fp32": 20.0}
#: images/s one loading process delivers to the GPU (decoded-image cache, tensor crops)
GPU_LOAD_RATE = 1500.0
#: at most this many images in a measured step (the rate per image is what is kept)
MEASURE_BATCH = 16


def _model(cell: Cell) -> Any:
    from strategies.model import EmbeddingNet

    m = cell.model
    return EmbeddingNet(m.trunk, dim=m.dim, pool=m.pool, freeze_bn=m.freeze_bn,
                        frozen_stages=m.frozen_stages)


def step_rate(model: Any, images: Any, train: bool = True, optimizer: str = "adam",
              repeats: int = 2, cached_stem: bool = False,
              autocast: Callable[[], Any] | None = None) -> float:
    """Images per second of a training step (forward, backward, optimizer step) or of an
    inference pass of ``model`` on ``images``, on their device: one warm-up, then the
    median of ``repeats``. ``cached_stem``: the steps run on the frozen stem's output,
    computed once (as from the feature cache)."""
    import contextlib

    import torch

    x = model.stem_features(images) if cached_stem else images
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, foreach=True) if optimizer == "adam"
           else torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=True))
    ctx = autocast or contextlib.nullcontext
    sync = torch.cuda.synchronize if images.device.type == "cuda" else (lambda: None)

    def once() -> float:
        sync()
        t0 = time.perf_counter()
        if train:
            model.train()
            opt.zero_grad(set_to_none=True)
            with ctx():
                out = model(x)
            out.float().square().sum().backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad(), ctx():
                model(x)
        sync()
        return time.perf_counter() - t0

    once()
    return len(images) / statistics.median(once() for _ in range(repeats))


def flops_per_image(model: Any, size: int, train: bool = True) -> float:
    """Floating-point operations of one image through ``model`` (forward, and backward
    when ``train``), counted on two random images on the CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        if train:
            model.train()
            model(x).sum().backward()
        else:
            model.eval()
            with torch.no_grad():
                model(x)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def _steps_and_evals(cell: Cell, info: Any) -> tuple[int, int]:
    """(optimisation steps, images embedded in evaluations) of a cell."""
    import math

    tr = cell.training
    n_exp = len(info.experiences)
    if tr.iterations is not None:
        steps = tr.iterations * n_exp
    else:
        steps = sum(math.ceil(tr.epochs * e.train_images / (tr.p * tr.k))
                    for e in info.experiences)
    test = sum(e.test_images for e in info.experiences)
    return steps, n_exp * test


def stream_infos(cells: list[Cell]) -> tuple[dict[str, Any], list[str]]:
    """scenario name -> its ``StreamInfo`` (no image decoded), and a note per scenario
    whose data cannot be read here: with an ``iterations`` budget its cells are still
    estimated, from its schedule, without their evaluations."""
    from types import SimpleNamespace

    from benchmarks.run.cell import build_benchmark
    from benchmarks.streams import parse_schedule

    infos: dict[str, Any] = {}
    notes = []
    for cell in cells:
        sc = cell.scenario
        if sc.name in infos:
            continue
        try:
            infos[sc.name] = build_benchmark(cell, info_only=True)
        except Exception as exc:  # noqa: BLE001 (data absent here: estimated without it)
            n = len(parse_schedule(sc.schedule)) if sc.dataset else len(sc.datasets or [])
            stub = SimpleNamespace(train_images=0, test_images=0)
            if cell.training.iterations is not None:
                infos[sc.name] = SimpleNamespace(experiences=[stub] * n)
            why = " ".join(str(exc).split())[:120]
            notes.append(f"  scenario {sc.name}: its data is not readable here ({why}); "
                         "its evaluations are not counted")
    return infos, notes


def _hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds >= 48 * 3600:
        return f"{seconds / 86400:,.0f} days"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def estimate(cells: list[Cell], infos: dict[str, Any]) -> list[str]:
    """The dry run's lines on expected wall time (see the module docstring); ``infos``:
    scenario name -> its stream's ``StreamInfo``."""
    import torch

    from benchmarks.run.cell import uses_feature_cache

    rates: dict[str, tuple[float, float, float, float]] = {}
    cpu_s = gpu_s = 0.0
    steps_all = evals_all = 0
    shown: list[str] = []
    for cell in cells:
        m, tr, sc = cell.model, cell.training, cell.scenario
        info = infos.get(sc.name)
        if info is None:
            continue
        key = repr((m.hashed_dump(), sc.image_size, tr.threads, tr.optimizer,
                    uses_feature_cache(cell)))
        if key not in rates:
            torch.manual_seed(0)  # not strategies.template's helpers: no Avalanche import
            before = torch.get_num_threads()
            torch.set_num_threads(tr.threads)
            try:
                model = _model(cell)
                images = torch.randn(min(MEASURE_BATCH, tr.p * tr.k), 3, sc.image_size,
                                     sc.image_size)
                cached = uses_feature_cache(cell)
                train = step_rate(model, images, True, tr.optimizer, cached_stem=cached)
                infer = step_rate(model, images, False, cached_stem=cached)
                flops = (flops_per_image(model, sc.image_size, True),
                         flops_per_image(model, sc.image_size, False))
            finally:
                torch.set_num_threads(before)
            rates[key] = (train, infer, *flops)
            shown.append(f"{m.trunk} at {sc.image_size} px: {train:.1f} training and "
                         f"{infer:.1f} inference images/s here ({tr.threads} thread"
                         f"{'s' if tr.threads > 1 else ''}), {flops[0] / 1e9:.2f} GFLOP per "
                         "training image")
        train, infer, f_train, f_infer = rates[key]
        steps, evals = _steps_and_evals(cell, info)
        batch = tr.p * tr.k
        steps_all, evals_all = steps_all + steps, evals_all + evals
        cpu_s += steps * batch / train + evals / infer
        tflops = GPU_TFLOPS["bf16" if tr.amp else "fp32"] * 1e12
        gpu_s += steps * batch / min(tflops / f_train, GPU_LOAD_RATE) \
            + evals / min(tflops / f_infer, GPU_LOAD_RATE)
    if not rates:
        return []
    return [
        f"expected wall time, cells one after another: {_hours(cpu_s)} on this machine, "
        f"{_hours(gpu_s)} on a GPU ({steps_all:,} steps, {evals_all:,} images embedded in "
        "evaluations)",
        "  how: " + "; ".join(shown) + " (measured now, random weights, same cost); GPU: "
        f"FLOPs counted / an assumed {GPU_TFLOPS['bf16']:.0f} TFLOP/s with training.amp, "
        f"{GPU_TFLOPS['fp32']:.0f} without, at most {GPU_LOAD_RATE:,.0f} images/s loaded "
        "(an H100's sustained rate, not measured: tools/gpu-check.sh measures it); "
        "strategies' extra passes not counted"]
