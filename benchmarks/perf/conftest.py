"""Shared helpers of the performance suites: data, peak-memory sampling, result table."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch


def clustered_embeddings(n: int, d: int = 512, per_class: int = 20, seed: int = 0):
    """L2-normalised clustered embeddings: n/per_class classes, Gaussian around centres."""
    g = torch.Generator().manual_seed(seed)
    classes = max(1, n // per_class)
    centres = torch.randn(classes, d, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    x = centres[labels] + 0.8 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_bytes(fn: Callable[[], Any], interval: float = 0.002) -> tuple[Any, int]:
    """Run ``fn`` and return (its result, peak resident memory above the start level)."""
    base = _rss()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    return out, max(peak, _rss()) - base


@pytest.fixture(scope="session")
def perf_table() -> dict[str, dict[str, float]]:
    """Medians and memory of every measured variant, for the same-run comparisons."""
    return {}
