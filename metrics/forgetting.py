"""Forgetting, BWT and average incremental recall from an R matrix (DESIGN.md, "Metrics").

``R[i][j]`` is the metric (e.g. Recall@1) on experience j's test set after training
experience i; the last row is the final model. With T experiences (indices 0..T-1):

* forgetting of task j < T-1: ``F_j = max_{j <= i < T-1} R[i][j] - R[T-1][j]``; reported as
  the mean over those j (``forgetting``);
* forgetting ratio: ``(R[j][j] - R[T-1][j]) / R[j][j]``, mean over j < T-1;
* BWT: ``mean_{j < T-1} (R[T-1][j] - R[j][j])`` (negative when the model forgets);
* average incremental recall: ``mean_i mean_{j <= i} R[i][j]``;
* final: ``R[T-1][j]`` per task, and ``final_mean`` their mean.

With a single experience nothing can be forgotten: the forgetting-type values are NaN
(undefined), not 0, so they are never averaged in by mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def forgetting(R: Sequence[Sequence[float]] | np.ndarray) -> dict[str, Any]:
    """Summaries of a T x T matrix; keys listed in the module docstring, plus per-task lists.

    Entries above the diagonal (zero-shot transfer) are allowed and ignored here, except in
    ``final``; entries on or below the diagonal must be finite.
    """
    r = np.asarray(R, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"R must be a non-empty T x T matrix, got shape {r.shape}")
    t = r.shape[0]
    lower = np.tril(np.ones((t, t), dtype=bool))
    if not np.isfinite(r[lower]).all():
        raise ValueError("R has missing (non-finite) entries on or below the diagonal")
    last = t - 1
    old = range(last)
    drop = np.array([r[j:last, j].max() - r[last, j] for j in old])
    diag = np.diag(r)[:last]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diag > 0, (diag - r[last, :last]) / diag, np.nan)
    bwt = r[last, :last] - diag
    avg_inc = float(np.mean([r[i, : i + 1].mean() for i in range(t)]))

    def mean(v: np.ndarray) -> float:
        return float(np.nanmean(v)) if v.size and not np.isnan(v).all() else float("nan")

    return {
        "forgetting": mean(drop),
        "forgetting_ratio": mean(ratio),
        "bwt": mean(bwt),
        "avg_incremental": avg_inc,
        "final_mean": float(r[last].mean()),
        "forgetting_per_task": drop.tolist(),
        "forgetting_ratio_per_task": ratio.tolist(),
        "bwt_per_task": bwt.tolist(),
        "final": r[last].tolist(),
    }
