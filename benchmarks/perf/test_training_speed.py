"""Training-side costs, each against what it replaces, measured in the same run.

* decoded-image cache: one epoch over the CUB subset's train images (decode + train
  augmentation) from the memory-mapped cache vs torchvision-style decode-every-epoch
  (PIL + ``retrieval_transforms``); the cache is built and one epoch of each run before
  timing (epoch 2 on), then the two take turns over 3 rounds;
* frozen-stem feature cache: training iterations/s of the thesis CPU model (ImageNet-shaped
  MobileNetV2, 18 of 19 stages frozen, P x K = 8 x 4 at 224 px) from cached stem outputs vs
  from images, and the embeddings of both paths compared;
* channels-last on CPU: a training step of the current CPU protocol's model (blocks 14-18
  trained on cached 160 px stem outputs, one thread) in NCHW and NHWC, taking turns;
* distillation overhead: the median training step (forward, every plugin's loss, backward,
  optimizer step; data loading excluded) of each strategy on the same batches of that
  model, with a teacher in place (second experience): the strategies run side by side,
  taking turns in blocks of 4 steps (:class:`Turns`), and each step is divided by
  finetune's step of the same index, about a second apart; the median over 3 rounds of
  24 timed steps counts. This machine's speed drifts by up to 30% over seconds, which
  made ratios of separately timed runs swing by +-0.15.

``make bench`` runs this file with the others; results: benchmarks/perf/results/.
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

SHARED = Path(os.environ.get("LRBENCH_SHARED_DATA",
                             Path(__file__).resolve().parents[3] / "shared" / "data"))
P, K = 8, 4
BOUNDS = {"l2_kd": 1.4, "lwf": 1.4, "mmd_kd": 1.4, "fecd": 1.4, "dkd": 2.0}


# -- decoded-image cache --------------------------------------------------------------------
def _cub(split: str, transform: Any = None):
    from benchmarks.datasets import get_dataset

    if not (SHARED / "CUB_200_2011" / "images.txt").is_file():
        pytest.skip("the CUB subset of ../shared/data is absent")
    return get_dataset("cub200", SHARED, split, transform=transform)


def _epoch(dataset: Dataset) -> int:
    torch.manual_seed(0)
    n = 0
    for i in range(len(dataset)):
        x, _ = dataset[i]
        n += x.shape[0]
    return n


def take_turns(runs: dict[str, Any], rounds: int = 3) -> dict[str, float]:
    """Median seconds of each of ``runs`` (name -> a function of no argument) over
    ``rounds`` rounds in which they take turns (a slow spell of the machine then hits all
    alike), after one warm-up round each: files or caches are then warm, as from the second
    epoch or step of a run on."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds + 1):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if r:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def interleaved_epochs(datasets: dict[str, Dataset], rounds: int = 3) -> dict[str, float]:
    """Median epoch time of each dataset, the epochs taking turns (:func:`take_turns`)."""
    return take_turns({name: functools.partial(_epoch, ds) for name, ds in datasets.items()},
                      rounds)


def both_variants(perf_table: dict[str, dict[str, float]], key: str) -> dict[str, float]:
    """This run's measurements of ``key``, or a skip when a variant is missing (the
    comparison needs both, from the same run)."""
    row = perf_table.get(key, {})
    if len(row) < 2:
        pytest.skip("run the whole file: the comparison needs both variants of this run")
    return row


def test_image_cache_epoch(benchmark, perf_table, tmp_path_factory):
    from benchmarks.run.cache import CachedImages, ImageCache, tensor_transforms
    from benchmarks.transforms import retrieval_transforms

    base = _cub("train")
    cache = ImageCache(base, 224, root=tmp_path_factory.mktemp("cache"))  # epoch 1
    datasets = {"decode_every_epoch": _cub("train", retrieval_transforms(224, train=True)),
                "image_cache": CachedImages(base, cache, tensor_transforms(224, train=True))}
    benchmark.group = "epoch over the CUB subset train split (2,999 images, 224 px)"
    out = benchmark.pedantic(interleaved_epochs, args=(datasets,), rounds=1, iterations=1)
    benchmark.extra_info.update({f"{k}_epoch_median_s": v for k, v in out.items()})
    perf_table["image_epoch"] = out


def test_image_cache_target(perf_table):
    row = both_variants(perf_table, "image_epoch")
    speedup = row["decode_every_epoch"] / row["image_cache"]
    print(f"\nimage cache: {speedup:.1f}x faster per epoch (target >= 3x)")
    assert speedup >= 3.0


# -- frozen-stem feature cache --------------------------------------------------------------
def thesis_model(classifier: bool = False, seed: int = 0) -> torch.nn.Module:
    from strategies.model import EmbeddingNet

    torch.manual_seed(seed)
    return EmbeddingNet("mobilenet_v2", dim=512, pool="max", frozen_stages=18,
                        classifier=classifier)


def _train_steps(model: torch.nn.Module, batches: list[torch.Tensor], labels: torch.Tensor):
    from strategies.losses import HardMiningLoss

    loss_fn = HardMiningLoss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for x in batches:
        opt.zero_grad()
        loss_fn(model(x), labels).backward()
        opt.step()


@pytest.mark.parametrize("variant", ["images", "feature_cache"])
def test_feature_cache_iterations(benchmark, perf_table, variant):
    model = thesis_model()
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(P * K, 3, 224, 224, generator=g) for _ in range(3)]
    labels = torch.arange(P).repeat_interleave(K)
    batches = images if variant == "images" else [model.stem_features(x) for x in images]
    benchmark.group = "training iterations, MobileNetV2 18/19 stages frozen, 8 x 4 at 224 px"
    benchmark.pedantic(_train_steps, args=(model, batches, labels), rounds=2, iterations=1,
                       warmup_rounds=1)
    perf_table.setdefault("feature_cache", {})[variant] = (
        len(batches) / benchmark.stats.stats.median)
    model.eval()
    with torch.no_grad():  # same model, same images: the two paths agree exactly
        assert torch.equal(model(images[0][:4]), model(model.stem_features(images[0][:4])))


def test_feature_cache_target(perf_table):
    row = both_variants(perf_table, "feature_cache")
    speedup = row["feature_cache"] / row["images"]
    print(f"\nfeature cache: {row['feature_cache']:.1f} it/s vs {row['images']:.2f} it/s "
          f"from images ({speedup:.0f}x, target >= 3x)")
    assert speedup >= 3.0


# -- channels-last on CPU -------------------------------------------------------------------
def test_channels_last_steps(benchmark, perf_table):
    """The current CPU protocol's training step (ImageNet-shaped MobileNetV2, blocks 14-18
    trained on cached 160 px stem outputs, 96 x 10 x 10, P x K = 8 x 4; one thread, as a
    cell runs) in the default layout and channels-last (``training.channels_last``),
    same weights and batches, taking turns."""
    from strategies.model import EmbeddingNet

    torch.manual_seed(0)
    nchw = EmbeddingNet("mobilenet_v2", dim=512, pool="max", frozen_stages=14)
    nhwc = EmbeddingNet("mobilenet_v2", dim=512, pool="max", frozen_stages=14)
    nhwc.load_state_dict(nchw.state_dict())
    nhwc = nhwc.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(P * K, 96, 10, 10, generator=g) for _ in range(4)]
    batches = {"nchw": feats,
               "channels_last": [f.contiguous(memory_format=torch.channels_last) for f in feats]}
    labels = torch.arange(P).repeat_interleave(K)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.group = "training step, MobileNetV2 blocks 14-18, 8 x 4 at 160 px, 1 thread"
        runs = {name: functools.partial(_train_steps, model, batches[name], labels)
                for name, model in (("nchw", nchw), ("channels_last", nhwc))}
        out = benchmark.pedantic(take_turns, args=(runs, 5), rounds=1, iterations=1)
        out = {name: t / len(feats) for name, t in out.items()}  # per step
    finally:
        torch.set_num_threads(threads)
    benchmark.extra_info.update({f"{k}_step_median_s": v for k, v in out.items()})
    perf_table["channels_last"] = out


def test_channels_last_target(perf_table):
    row = both_variants(perf_table, "channels_last")
    speedup = row["nchw"] / row["channels_last"]
    print(f"\nchannels-last: {1e3 * row['channels_last']:.0f} ms per step vs "
          f"{1e3 * row['nchw']:.0f} ms in NCHW ({speedup:.2f}x, target >= 1.2x)")
    assert speedup >= 1.2


# -- distillation overhead ------------------------------------------------------------------
class _Features(Dataset):
    """Random stem outputs (320 x 7 x 7) with labels: stands in for the feature cache."""

    def __init__(self, n_classes: int, per_class: int, offset: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n_classes * per_class, 320, 7, 7, generator=g)
        self.targets = [offset + i // per_class for i in range(len(self.x))]
        self.classes = [str(c) for c in sorted(set(self.targets))]
        self.class_ids = list(range(len(self.classes)))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], self.targets[i]


class Turns:
    """Round-robin turns between threads, a block of training iterations each: strategy A's
    steps 4k..4k+3, then B's, ... then A's next block. Only the holder of the turn runs, so
    each step has the whole CPU, and the steps compared are about a second apart: this
    machine's speed, which drifts by up to 30% over seconds, cancels out. The first step
    of a block finds the caches full of the other strategies' weights, so it is not timed
    (one strategy per process, as in a real run, keeps its own in cache)."""

    def __init__(self, n: int, block: int = 4) -> None:
        self._sems = [threading.Semaphore(0) for _ in range(n)]
        self._done = [False] * n
        self._sems[0].release()
        self.block = block

    def wait(self, i: int) -> None:
        self._sems[i].acquire()

    def pass_on(self, i: int, finished: bool = False) -> bool:
        """Hand the turn to the next unfinished thread; False when there is none."""
        self._done[i] = finished
        n = len(self._sems)
        for j in range(1, n):
            k = (i + j) % n
            if not self._done[k]:
                self._sems[k].release()
                return True
        return False


class StepTimer:
    """An Avalanche plugin timing each training iteration (forward to optimizer step); with
    ``turns`` (thread ``index``) it hands the turn on after each block of iterations and
    leaves each block's first iteration untimed (``None``)."""

    def __init__(self, turns: Turns | None = None, index: int = 0) -> None:
        self.times: list[float | None] = []
        self._t0 = 0.0
        self.first_step_at: float | None = None
        self.turns, self.index = turns, index

    def __getattr__(self, name: str) -> Any:  # every other callback: nothing to do
        if name.startswith(("before_", "after_")):
            return lambda *a, **k: None
        raise AttributeError(name)

    def before_training_iteration(self, strategy: Any, **kw: Any) -> None:
        self._t0 = time.perf_counter()
        if self.first_step_at is None:
            self.first_step_at = self._t0

    def after_training_iteration(self, strategy: Any, **kw: Any) -> None:
        elapsed = time.perf_counter() - self._t0
        if self.turns is None:
            self.times.append(elapsed)
            return
        first_of_block = len(self.times) % self.turns.block == 0
        self.times.append(None if first_of_block else elapsed)
        if len(self.times) % self.turns.block == 0 and self.turns.pass_on(self.index):
            self.turns.wait(self.index)


def _strategy_after_first_experience(name: str, timer: StepTimer, iterations: int
                                     ) -> tuple[Any, Any]:
    """``name``'s template on the thesis model, trained on the first experience (so it has
    a teacher), and the second experience."""
    from benchmarks.streams import class_incremental
    from metrics.plugins import RetrievalMetrics
    from strategies import make_plugin
    from strategies.template import RetrievalTemplate, seed_everything

    seed_everything(0)
    bench = class_incremental((_Features(16, 8, 0, 0), _Features(16, 2, 0, 1)), "8+8")
    plugin = make_plugin(name, {})
    model = thesis_model(classifier=plugin.needs_classifier)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                           foreach=True)  # as the runner builds it
    tpl = RetrievalTemplate(model=model, optimizer=opt, p=P, k=K, iterations=iterations,
                            plugins=[plugin, timer], metrics=RetrievalMetrics(ks=(1,)),
                            seed=0)
    turns, timer.turns = timer.turns, None  # the first experience is set-up: no turns
    tpl.train(bench.train_stream[0])
    timer.times.clear()
    timer.turns, timer.first_step_at = turns, None
    return tpl, bench.train_stream[1]


STRATEGIES = ["finetune", "l2_kd", "lwf", "mmd_kd", "fecd", "dkd"]
ROUNDS = 3
ITERATIONS = 32


def lockstep_round(iterations: int = ITERATIONS) -> tuple[dict[str, list[float]],
                                                          dict[str, float]]:
    """Every strategy's second experience, one thread each, taking turns block by block
    (:class:`Turns`): per strategy its step times (``None`` for the untimed first step of
    each block) and its set-up time (DKD's synthesis: from the start of its experience to
    its first step, all while holding the turn)."""
    turns = Turns(len(STRATEGIES))
    timers = {n: StepTimer(turns, i) for i, n in enumerate(STRATEGIES)}
    ready = {n: _strategy_after_first_experience(n, timers[n], iterations)
             for n in STRATEGIES}
    setup: dict[str, float] = {}

    def run(i: int, name: str) -> None:
        turns.wait(i)
        t0 = time.perf_counter()
        try:
            tpl, exp = ready[name]
            tpl.train(exp)
        finally:
            setup[name] = (timers[name].first_step_at or t0) - t0
            turns.pass_on(i, finished=True)

    with ThreadPoolExecutor(len(STRATEGIES)) as pool:
        for fut in [pool.submit(run, i, n) for i, n in enumerate(STRATEGIES)]:
            fut.result()
    return {n: t.times for n, t in timers.items()}, setup


def interleaved_steps() -> dict[str, dict[str, float]]:
    """``ROUNDS`` lockstep rounds (:func:`lockstep_round`): per strategy the median step,
    its median set-up time, and the median over all steps of its step k / finetune's step
    k of the same round (what the bounds check)."""
    steps: dict[str, list[float]] = {n: [] for n in STRATEGIES}
    ratios: dict[str, list[float]] = {n: [] for n in STRATEGIES}
    setup: dict[str, list[float]] = {n: [] for n in STRATEGIES}
    for _ in range(ROUNDS):
        times, extra = lockstep_round()
        for n in STRATEGIES:
            steps[n] += [t for t in times[n] if t is not None]
            ratios[n] += [a / b for a, b in zip(times[n], times["finetune"], strict=True)
                          if a is not None and b is not None]
            setup[n].append(extra[n])
    return {n: {"step_median_s": statistics.median(steps[n]),
                "ratio_to_finetune": statistics.median(ratios[n]),
                "experience_setup_s": statistics.median(setup[n]),
                "steps": len(steps[n])} for n in STRATEGIES}


def test_strategy_steps(benchmark, perf_table):
    benchmark.group = "training steps, MobileNetV2 18/19 frozen, cached features, 8 x 4"
    out = benchmark.pedantic(interleaved_steps, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    perf_table["steps"] = {n: v["step_median_s"] for n, v in out.items()}
    perf_table["ratios"] = {n: v["ratio_to_finetune"] for n, v in out.items()}
    perf_table["setup"] = {n: v["experience_setup_s"] for n, v in out.items()}


def _ratios(perf_table) -> dict[str, float]:
    steps = perf_table.get("steps", {})
    if set(steps) != set(STRATEGIES):
        pytest.skip("run the whole file: the ratios need every strategy of this run")
    ratios = {n: perf_table["ratios"][n] for n in BOUNDS}
    print("\nstep time / finetune's: " + ", ".join(f"{n} {r:.2f}x" for n, r in ratios.items())
          + f"; dkd synthesis (once per experience) {perf_table['setup']['dkd']:.2f} s")
    return ratios


def test_overhead_bounds(perf_table):
    ratios = _ratios(perf_table)
    for n, bound in BOUNDS.items():
        assert ratios[n] <= bound, f"{n}: {ratios[n]:.2f}x > {bound}x"


# -- scaling: one experience against its number of classes ---------------------------------
@pytest.mark.parametrize("classes", [10, 25, 50, 100])
def test_experience_time_vs_classes(benchmark, perf_table, classes):
    """Train one experience (1 epoch of 30 cached images per class, finetune) and evaluate
    it (30 test images per class), the thesis CPU model."""
    from benchmarks.streams import class_incremental
    from metrics.plugins import RetrievalMetrics
    from strategies.template import RetrievalTemplate, seed_everything

    seed_everything(0)
    bench = class_incremental((_Features(classes, 30, 0, 0), _Features(classes, 30, 0, 1)),
                              [classes])
    model = thesis_model()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tpl = RetrievalTemplate(model=model, optimizer=opt, p=P, k=K, iterations=None, epochs=1,
                            metrics=RetrievalMetrics(ks=(1, 2, 4, 8)), eval_mb_size=256)
    benchmark.group = "one experience (1 epoch, 30 images/class) + its evaluation"
    benchmark.pedantic(tpl.run, args=(bench,), rounds=1, iterations=1)
    perf_table.setdefault("experience", {})[classes] = benchmark.stats.stats.median
