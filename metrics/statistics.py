"""Statistics over seeds shared by reports and ``lrbench tune``: the bootstrap CI of a mean.

It lives on the ground floor (``metrics``) so that the tuner (``benchmarks``) and the
reports (``reports.tables`` re-exports it) compute the same interval the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

#: how many bootstrap resamples a CI draws, and the seed that makes reports deterministic
N_RESAMPLES = 9999
CI_SEED = 0


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                 seed: int = CI_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaNs dropped), deterministic.

    (NaN, NaN) with fewer than 2 values (undefined); (v, v) when all values are equal
    (degenerate: the seeds show no spread, which is not evidence of none). A percentile
    bootstrap CI never leaves [min, max] of the values, so with few seeds it is too narrow.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    res = stats.bootstrap((v,), np.mean, n_resamples=N_RESAMPLES, confidence_level=confidence,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
