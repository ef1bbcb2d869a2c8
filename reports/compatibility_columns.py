"""The per-cell columns of the never-re-indexed gallery and the compatibility of models
(:data:`COLUMNS`), which :func:`reports.load.summaries` adds to every cell's summary; the
tables, figures and page blocks built on them are :mod:`reports.compatibility` and
:mod:`reports.compatibility_plots`. NaN for a store written before the sections existed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from metrics.compatibility import (
    average_accuracy,
    average_compatibility,
    backfill_gain,
    backward_compatibility,
    cross_test_gain,
    forward_compatibility,
    gain_ratio,
)

#: per-cell columns this module adds to ``reports.load.summaries``
COLUMNS = ("final_nri", "nri_cost", "nfr", "ac", "am", "bc", "fc", "cross_test_gain",
           "backfill_gain", "update_gain")


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _array(rows: Any) -> np.ndarray:
    return np.array([[_float(v) for v in row] for row in rows], dtype=float)


def never_reindexed_curve(entry: dict[str, Any] | None, metric: str) -> np.ndarray | None:
    """The never-re-indexed value of ``metric`` (``recall@K``, ``map_at_r``) after each
    experience, from a cell's stored sections; None when not measured."""
    nri = (entry or {}).get("never_reindexed")
    if not nri:
        return None
    if metric == "map_at_r":
        values = nri.get("map_at_r")
    elif metric.startswith("recall@"):
        values = (nri.get("recall") or {}).get(metric.split("@")[1])
    else:
        values = None
    return None if values is None else np.array([_float(v) for v in values])


def cell_summary(entry: dict[str, Any] | None, metric: str,
                 seen: np.ndarray | None) -> dict[str, float]:
    """The :data:`COLUMNS` of one cell (NaN where not measured)."""
    out = dict.fromkeys(COLUMNS, float("nan"))
    curve = never_reindexed_curve(entry, metric)
    if curve is not None and len(curve):
        out["final_nri"] = float(curve[-1])
        if seen is not None and len(seen):
            out["nri_cost"] = float(seen[-1]) - float(curve[-1])
        nfr = [_float(v) for v in (entry or {})["never_reindexed"].get(
            "negative_flip_rate", [])[1:]]
        if nfr and np.isfinite(nfr).all():
            out["nfr"] = float(np.mean(nfr))
    comp = (entry or {}).get("compatibility")
    if comp:
        m = _array(comp["matrix"])
        out.update(ac=average_compatibility(m), am=average_accuracy(m),
                   bc=backward_compatibility(m), fc=forward_compatibility(m),
                   cross_test_gain=cross_test_gain(m))
        if comp.get("self_test") is not None:
            backfill = backfill_gain(m, _array(comp["self_test"]))
            out.update(backfill_gain=backfill,
                       update_gain=gain_ratio(out["cross_test_gain"], backfill))
    return out


def add_summary_columns(out: pd.DataFrame, results: Any, metric: str) -> pd.DataFrame:
    """``out`` (one row per cell, :func:`reports.load.summaries`) with :data:`COLUMNS`."""
    rows = [cell_summary(results.gallery.get((r.scenario, r.strategy, r.seed)), metric,
                         results.seen.get((r.scenario, r.strategy, r.seed), {}).get(metric))
            for r in out.itertuples()]
    for col in COLUMNS:
        out[col] = [row[col] for row in rows] if rows else []
    return out
