"""Statistics over seeds shared by reports and ``lrbench tune``: intervals of a mean.

It lives on the ground floor (``metrics``) so that the tuner (``benchmarks``) and the
reports (``reports.tables`` re-exports it) compute the same interval the same way.

The default interval is Student's t (:func:`t_interval`): with the 3 to 5 seeds a
benchmark can afford, a percentile bootstrap interval is too narrow (it never leaves the
range of the values; measured on 5 seeds it was 0.59-0.65x the t interval's width), so
the bootstrap (:func:`bootstrap_ci`) stays available but is never the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

#: how many bootstrap resamples a CI draws, and the seed that makes reports deterministic
N_RESAMPLES = 9999
CI_SEED = 0
#: the interval methods a report or the tuner may show
CI_METHODS = ("t", "bootstrap")
CIMethod = Literal["t", "bootstrap"]


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v)]


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95
               ) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaNs dropped): mean ± t_{n-1} s/√n,
    as ``scipy.stats.t.interval`` gives it. (NaN, NaN) with fewer than 2 values
    (undefined); (v, v) when all values are equal (degenerate: the seeds show no spread,
    which is not evidence of none). Applied to per-seed paired differences it is the
    interval of a mean difference."""
    v = _finite(values)
    if len(v) < 2:
        return float("nan"), float("nan")
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    low, high = stats.t.interval(confidence, len(v) - 1, loc=float(v.mean()),
                                 scale=float(stats.sem(v)))
    return float(low), float(high)


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                 seed: int = CI_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaNs dropped), deterministic.

    (NaN, NaN) with fewer than 2 values (undefined); (v, v) when all values are equal
    (degenerate: the seeds show no spread, which is not evidence of none). A percentile
    bootstrap CI never leaves [min, max] of the values, so with few seeds it is too narrow:
    an option, not the default (:func:`mean_ci`).
    """
    v = _finite(values)
    if len(v) < 2:
        return float("nan"), float("nan")
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    res = stats.bootstrap((v,), np.mean, n_resamples=N_RESAMPLES, confidence_level=confidence,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci(values: Sequence[float] | np.ndarray, method: CIMethod = "t",
            confidence: float = 0.95) -> tuple[float, float]:
    """The 95% interval of the mean of ``values`` by ``method`` (``t``: Student's t, the
    default; ``bootstrap``: percentile bootstrap)."""
    if method == "t":
        return t_interval(values, confidence)
    if method == "bootstrap":
        return bootstrap_ci(values, confidence)
    raise ValueError(f"unknown interval method {method!r}; use one of {', '.join(CI_METHODS)}")


def describe_ci(method: CIMethod) -> str:
    """How a report names its interval, e.g. ``95% Student-t CI over seeds``."""
    return ("95% Student-t CI over seeds" if method == "t"
            else "95% percentile-bootstrap CI over seeds (too narrow with few seeds)")
