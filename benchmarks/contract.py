"""The contract kit: prove in seconds that a strategy plugin works, in one line.

In a plugin author's test file::

    from benchmarks.contract import check_strategy

    def test_my_method_contract(tmp_path):
        check_strategy("my_method", tmp_path=tmp_path)

On a tiny synth-fg class-incremental stream (3 experiences x 4 classes, 32 px, a small
CNN, or another randomly initialised trunk: ``trunk="timm:resnet18"``) it checks that the
strategy

1. trains on 3 experiences and every logged loss is finite;
2. changes the loss when its regulariser is on (strategies flagged ``regularizer``): from
   the second experience a term of its own is non-zero;
3. evaluates to a full R matrix (3 x 3 Recall@1, zero-shot entries included);
4. checkpoints after the first experience and resumes to identical numbers;
5. is deterministic under a seed (two runs, identical R matrices and losses).

Failures raise ``AssertionError`` with what went wrong. ``lrbench check NAME`` runs the same
checks from the command line, printing each as it passes.

The kit builds its runs as the runner builds a cell (:func:`benchmarks.run.cell.build_cell`:
the same plugin, model, metric loss, optimizer and gradient-norm guard), so what it proves
holds for ``lrbench run``. It lives in ``benchmarks``, beside the runner it exercises:
strategies never import benchmarks.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import (
    CacheSpec,
    Cell,
    EvaluationSpec,
    ModelSpec,
    ScenarioSpec,
    TrainingSpec,
    resolved_hparams,
)
from strategies.registry import get_strategy

_BASE_TERMS = {"experience", "total", "metric", "ce"}

#: the kit's stream: 3 experiences of 4 synth-fg classes (10 train / 6 test images each,
#: 32 px), in class-id order
TINY_SCENARIO = ScenarioSpec(
    name="contract-tiny", dataset="synth-fg", schedule="4+4+4", order="sorted", image_size=32,
    dataset_kwargs={"num_classes": 12, "train_per_class": 10, "test_per_class": 6})


def tiny_cell(name: str, hparams: dict[str, Any] | None = None, seed: int = 0,
              iterations: int = 6, lr: float = 0.01, trunk: str = "small_cnn") -> Cell:
    """A cell running strategy ``name`` on the kit's tiny stream with ``trunk`` randomly
    initialised (``model.trunk`` of a matrix: a small CNN by default, or e.g. timm:resnet18),
    a 32-d embedding, P x K = 4 x 3, Adam, ``iterations`` steps per experience."""
    return Cell(scenario=TINY_SCENARIO, strategy=name,
                hparams=resolved_hparams(name, hparams or {}), seed=seed,
                model=ModelSpec(trunk=trunk, dim=32, pool="avg"),
                training=TrainingSpec(p=4, k=3, iterations=iterations, lr=lr,
                                      eval_mb_size=64),
                evaluation=EvaluationSpec(ks=[1, 2], map_at_r=False), cache=CacheSpec())


def tiny_stream(seed: int = 0) -> Any:
    """The kit's stream (:data:`TINY_SCENARIO`) as an Avalanche benchmark."""
    from benchmarks.run.cell import build_benchmark

    return build_benchmark(tiny_cell("finetune", seed=seed))


def build_template(name: str, hparams: dict[str, Any] | None = None, seed: int = 0,
                   iterations: int = 6, lr: float = 0.01, trunk: str = "small_cnn") -> Any:
    """The training template of :func:`tiny_cell`, built as the runner builds it (used by
    the kit and quick tests)."""
    from benchmarks.run.cell import build_cell

    return build_cell(tiny_cell(name, hparams, seed, iterations, lr, trunk)).template


@dataclass
class ContractReport:
    """What the kit measured (returned when every check passed)."""

    name: str
    r_matrix: np.ndarray
    loss_terms: set[str] = field(default_factory=set)
    checks: list[str] = field(default_factory=list)


def check_strategy(name: str, hparams: dict[str, Any] | None = None, *,
                   tmp_path: str | Path | None = None, iterations: int = 6,
                   seed: int = 0, on_check: Callable[[str], None] | None = None,
                   trunk: str = "small_cnn") -> ContractReport:
    """Run the contract checks on strategy ``name`` (see the module docstring);
    ``on_check`` is called with each check's description as soon as it passed; ``trunk``
    is the model's trunk (``model.trunk`` of a matrix), randomly initialised."""
    spec = get_strategy(name)
    bench = tiny_stream()
    report = ContractReport(name, np.empty(0))

    def passed(*checks: str) -> None:
        for check in checks:
            report.checks.append(check)
            if on_check is not None:
                on_check(check)

    # 1 + 3: trains on 3 experiences, finite losses, full R matrix
    first = build_template(name, hparams, seed, iterations, trunk=trunk)
    first.run(bench)
    r = first.metrics.r_matrix(1)
    report.r_matrix = r
    assert first.loss_history, f"{name}: no training iteration ran"
    for row in first.loss_history:
        bad = {k: v for k, v in row.items() if not math.isfinite(v)}
        assert not bad, f"{name}: non-finite loss terms {bad} in experience {row['experience']}"
    assert r.shape == (3, 3) and np.isfinite(r).all(), f"{name}: R matrix not full:\n{r}"
    report.loss_terms = {k for row in first.loss_history for k in row} - {"experience"}
    passed("trains on 3 experiences", "finite losses", "full R matrix")

    # 2: the regulariser changes the loss
    if spec.cls.regularizer:
        later = [row for row in first.loss_history if row["experience"] >= 1]
        own = {k for row in later for k, v in row.items() if k not in _BASE_TERMS and v != 0}
        assert own, (f"{name}: flagged as a regulariser, but no term of its own is non-zero "
                     f"after the first experience (terms: {sorted(report.loss_terms)})")
        passed(f"regulariser active ({', '.join(sorted(own))})")

    # 5: determinism under a seed
    second = build_template(name, hparams, seed, iterations, trunk=trunk)
    second.run(bench)
    assert np.array_equal(second.metrics.r_matrix(1), r), (
        f"{name}: two runs with seed {seed} differ:\n{r}\n{second.metrics.r_matrix(1)}")
    assert second.loss_history == first.loss_history, f"{name}: losses differ between runs"
    passed("deterministic under a seed")

    # 4: checkpoint after the first experience, resume in a fresh template
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        part = build_template(name, hparams, seed, iterations, trunk=trunk)
        part.run(bench, checkpoint=ckpt, stop_after=1)
        # another initialisation: it must not matter
        resumed = build_template(name, hparams, seed + 1, iterations, trunk=trunk)
        resumed.seed = seed
        resumed.load_checkpoint(ckpt)
        resumed.run(bench)
    assert np.array_equal(resumed.metrics.r_matrix(1), r), (
        f"{name}: resumed run differs from the uninterrupted one:\n{r}\n"
        f"{resumed.metrics.r_matrix(1)}")
    assert resumed.loss_history == first.loss_history, f"{name}: resumed losses differ"
    passed("checkpoint + resume identical")
    return report
