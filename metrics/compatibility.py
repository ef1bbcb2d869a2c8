"""Compatibility of the models of a stream: the pairwise matrix M and its summaries.

After experience i the model ``phi_i`` exists; for every pair ``i >= j``

    M[i][j] = Recall@1 with the queries embedded by phi_i and the gallery by phi_j,

on one fixed query/gallery set per column: the test images of every class seen by step j
(experiences 0..j), each image a query and every other image of the set its gallery (the
query's own image left out by index, as everywhere in lrbench). ``M[j][j]`` is the
self-test of phi_j (the seen-classes value after experience j); ``S[i][j]``, the
self-test of phi_i on the same set (queries and gallery re-embedded by phi_i), is what
backfilling column j would give. Definitions, sources and what each departs from:
``docs/metrics.md``, "Compatibility". Every function takes a T x T array (NaN where not
measured) and returns NaN where its quantity is undefined (fewer than two models, a
missing entry), never 0.

* :func:`compatible_pairs`: BCT's empirical compatibility criterion, strict
  (Shen et al., CVPR 2020, Eq. 3): ``M[i][j] > M[j][j]``;
* :func:`average_compatibility` (AC), :func:`average_accuracy` (AM),
  :func:`backward_compatibility` (BC), :func:`forward_compatibility` (FC): CL2R's
  summaries (Biondi et al., 2023);
* :func:`update_gain`: BCT's update gain per pair, with the backfilled self-test ``S`` as
  its upper bound; :func:`cross_test_gain` and :func:`backfill_gain`, its numerator and
  denominator averaged over the pairs, and :func:`pooled_update_gain`, their ratio: the
  one-number summary (a mean of the per-pair ratios is ruled by pairs whose backfill gain
  is a few queries).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["average_accuracy", "average_compatibility", "backward_compatibility",
           "backfill_gain", "compatibility_summary", "compatible_pairs", "cross_test_gain",
           "forward_compatibility", "gain_ratio", "pooled_update_gain", "update_gain"]


def _square(m: Any) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a compatibility matrix is T x T, got shape {a.shape}")
    return a


def compatible_pairs(m: Any) -> np.ndarray:
    """T x T booleans: entry (i, j), i > j, is True when phi_i is compatible with phi_j
    under BCT's criterion ``M[i][j] > M[j][j]`` (strict: a tie is not compatible; an
    unmeasured entry is not compatible). False on and above the diagonal."""
    a = _square(m)
    t = a.shape[0]
    out = np.zeros((t, t), dtype=bool)
    for i in range(t):
        for j in range(i):
            out[i, j] = bool(a[i, j] > a[j, j])  # NaN compares False
    return out


def average_compatibility(m: Any) -> float:
    """AC: the fraction of the T(T-1)/2 pairs i > j that are compatible (strict
    criterion). CL2R's code counts a tie ``M[i][j] == M[j][j]`` as compatible; here it is
    not. NaN with one model (CL2R's code returns 1) or a missing entry of the lower
    triangle."""
    a = _square(m)
    t = a.shape[0]
    if t < 2 or not np.isfinite(a[np.tril_indices(t)]).all():
        return float("nan")
    return float(compatible_pairs(a).sum()) / (t * (t - 1) / 2)


def average_accuracy(m: Any) -> float:
    """AM: the mean of the T(T+1)/2 entries of the lower triangle, diagonal included. A
    true 0 is a value and counts (iamcl2r's code turns zeros into NaN and leaves them
    out); NaN when an entry is missing."""
    a = _square(m)
    low = a[np.tril_indices(a.shape[0])]
    return float(low.mean()) if low.size and np.isfinite(low).all() else float("nan")


def backward_compatibility(m: Any) -> float:
    """BC: ``mean_{i < T-1} (M[T-1][i] - M[i][i])``, the final model's queries against
    each earlier model's gallery, relative to that model's self-test. NaN with one model."""
    a = _square(m)
    t = a.shape[0]
    if t < 2:
        return float("nan")
    v = np.array([a[t - 1, i] - a[i, i] for i in range(t - 1)])
    return float(v.mean()) if np.isfinite(v).all() else float("nan")


def forward_compatibility(m: Any) -> float:
    """FC: ``mean_{1 <= i <= T-1} (M[i][i-1] - M[i][i])``, each model's queries against
    the previous model's gallery, relative to its own self-test. NaN with one model."""
    a = _square(m)
    t = a.shape[0]
    if t < 2:
        return float("nan")
    v = np.array([a[i, i - 1] - a[i, i] for i in range(1, t)])
    return float(v.mean()) if np.isfinite(v).all() else float("nan")


def update_gain(m: Any, s: Any) -> np.ndarray:
    """BCT's update gain per pair, T x T (NaN on and above the diagonal):

        G[i][j] = (M[i][j] - M[j][j]) / (S[i][j] - M[j][j]),

    the part of what backfilling column j with phi_i would add (``S[i][j] - M[j][j]``)
    that phi_i's queries reach without backfilling. NaN where backfilling would not help
    (``S[i][j] <= M[j][j]``: no gain to share) or an entry is missing."""
    a, b = _square(m), _square(s)
    if a.shape != b.shape:
        raise ValueError(f"M and S differ in shape: {a.shape} != {b.shape}")
    t = a.shape[0]
    out = np.full((t, t), np.nan)
    for i in range(t):
        for j in range(i):
            gain = b[i, j] - a[j, j]
            if np.isfinite(gain) and gain > 0 and np.isfinite(a[i, j]):
                out[i, j] = (a[i, j] - a[j, j]) / gain
    return out


def _lower_mean(v: np.ndarray) -> float:
    """The mean of the strict lower triangle of ``v``; NaN with one model or a missing
    entry."""
    t = v.shape[0]
    low = v[np.tril_indices(t, -1)]
    return float(low.mean()) if low.size and np.isfinite(low).all() else float("nan")


def cross_test_gain(m: Any) -> float:
    """``mean_{i > j} (M[i][j] - M[j][j])``: what an update without backfilling gives over
    keeping the old model, averaged over every pair (update gain's numerator; AC counts
    its positive terms). NaN with one model or a missing entry."""
    a = _square(m)
    return _lower_mean(a - np.diag(a)[None, :])


def backfill_gain(m: Any, s: Any) -> float:
    """``mean_{i > j} (S[i][j] - M[j][j])``: what backfilling every old gallery with the
    newer model would give over keeping the old model (update gain's denominator); at or
    below 0 backfilling would not help on average. NaN with one model or a missing entry."""
    a, b = _square(m), _square(s)
    if a.shape != b.shape:
        raise ValueError(f"M and S differ in shape: {a.shape} != {b.shape}")
    return _lower_mean(b - np.diag(a)[None, :])


#: the smallest backfill gain (mean over the pairs, in Recall@1) an update gain is divided
#: by: one point of Recall@1. Below it the ratio divides by a few queries' worth of noise
#: (on the CUB subset a backfill gain of 0.0005, about one query, gave -142)
MIN_BACKFILL_GAIN = 0.01


def gain_ratio(cross: float, backfill: float) -> float:
    """``cross / backfill`` where the backfill gain is at least :data:`MIN_BACKFILL_GAIN`,
    else NaN: there is no gain of backfilling to share, or too little to measure a share
    of."""
    ok = np.isfinite(cross) and np.isfinite(backfill) and backfill >= MIN_BACKFILL_GAIN
    return float(cross / backfill) if ok else float("nan")


def pooled_update_gain(m: Any, s: Any) -> float:
    """BCT's update gain pooled over the pairs i > j: :func:`cross_test_gain` over
    :func:`backfill_gain`, the share of backfilling's gain that the never-re-embedded
    galleries reach (1: as good as backfilling, 0: as keeping the old models, below 0:
    worse). NaN where backfilling would gain less than :data:`MIN_BACKFILL_GAIN` (or
    nothing) or an entry is missing (:func:`gain_ratio`)."""
    return gain_ratio(cross_test_gain(m), backfill_gain(m, s))


def compatibility_summary(m: Any, s: Any | None = None) -> dict[str, Any]:
    """Every summary of one run's M (and S): ``ac``, ``am``, ``bc``, ``fc``, the number of
    ``compatible`` pairs out of ``pairs``, ``cross_test_gain``, and with ``s`` the per-pair
    ``update_gain`` matrix, ``backfill_gain`` and ``update_gain_pooled``."""
    a = _square(m)
    t = a.shape[0]
    out: dict[str, Any] = {
        "ac": average_compatibility(a), "am": average_accuracy(a),
        "bc": backward_compatibility(a), "fc": forward_compatibility(a),
        "compatible": int(compatible_pairs(a).sum()), "pairs": t * (t - 1) // 2,
        "cross_test_gain": cross_test_gain(a),
    }
    if s is not None:
        out["update_gain"] = update_gain(a, s).tolist()
        out["backfill_gain"] = backfill_gain(a, s)
        out["update_gain_pooled"] = gain_ratio(out["cross_test_gain"], out["backfill_gain"])
    return out
