"""The never-re-indexed gallery and the compatibility of models in reports: summary columns,
tables, figures and the per-cell CSV (definitions: ``docs/metrics.md``, "A gallery that
is never re-indexed" and "Compatibility").

Read from each cell's ``never_reindexed`` and ``compatibility`` sections
(:mod:`metrics.gallery`); the summaries are recomputed here from the stored curves and the
matrix M (:mod:`metrics.compatibility`), never read from the run's own summary. A store
written before these sections existed has none of it: its columns are NaN and every table,
figure and CSV of this module is left out, so it reports as before.

Columns (one value per cell, the comparison tables and ``--claims`` read them):

* ``final_nri``: the chosen metric on the never-re-indexed gallery after the last
  experience; ``nri_cost``: the re-embedded (seen-classes) value minus it, the **cost of
  not backfilling** (above 0: re-embedding the gallery would have found more);
* ``nfr``: the mean negative-flip rate over the model updates (experiences 1..T-1);
* ``ac``, ``am``, ``bc``, ``fc``: CL2R's summaries of M; ``cross_test_gain`` and
  ``backfill_gain``: BCT's update gain's numerator and denominator averaged over the pairs
  i > j; ``update_gain``: their ratio (pooled over the pairs; NaN where backfilling would
  gain less than one point of Recall@1: ``metrics.compatibility.gain_ratio``).

These columns are computed in :mod:`reports.compatibility_columns` (which
:mod:`reports.load` imports; re-exported here); the figures are drawn by
:mod:`reports.compatibility_plots`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from metrics.compatibility import compatible_pairs, gain_ratio
from reports.compatibility_columns import (  # noqa: F401 (re-exported)
    COLUMNS,
    _array,
    _float,
    add_summary_columns,
    cell_summary,
    never_reindexed_curve,
)

#: the figures of a scenario: kind -> caption (the report page shows them in this order)
FIGURE_TITLES = {
    "never_reindexed": "The gallery a deployed search holds: re-embedded after every "
                       "experience (solid, the seen-classes value) and never re-indexed "
                       "(dashed: each experience's images embedded once, by the model of "
                       "their arrival); the gap is the cost of not backfilling (mean over "
                       "seeds, band: 95% Student-t CI, shaded: the gap)",
    "gallery_drift": "Where old-class queries look in the never-re-indexed gallery: the "
                     "newest part's share of their top K (dashed black: its share of the "
                     "gallery), and the negative-flip rate of each update (mean over seeds)",
    # no brackets: "M[i][j]" is a reference link to Markdown (mkdocs warns), and a
    # caption is plain text in the HTML page (no code spans)
    "compatibility": "Compatibility matrix M, row i = the model that embeds the queries, "
                     "column j = the model that embedded the gallery: Recall@1 on the "
                     "classes seen by step j (mean over seeds; * marks BCT's criterion, "
                     "a pair i > j above its column's diagonal value, met by the mean)",
}


def _column_means(rows: list[list[float]]) -> list[float]:
    """The mean of each column over the finite values (NaN for a column without one)."""
    arr = np.array(rows, dtype=float)
    return [float(np.mean(c[np.isfinite(c)])) if np.isfinite(c).any() else float("nan")
            for c in arr.T]


def _order(results: Any, scenario: str, strategies: list[str] | None) -> list[str]:
    have = {k[1] for k in results.gallery if k[0] == scenario}
    names = strategies if strategies is not None else list(dict.fromkeys(
        results.cells.strategy))
    return [s for s in names if s in have]


def _cells(results: Any, scenario: str, strategy: str) -> list[tuple[int, dict[str, Any]]]:
    return sorted((k[2], v) for k, v in results.gallery.items()
                  if k[0] == scenario and k[1] == strategy)


def gallery_table(results: Any, scenario: str, metric: str,
                  strategies: list[str] | None = None) -> pd.DataFrame:
    """Per strategy (mean over seeds), after the last experience: ``metric`` on the
    re-embedded gallery (the seen-classes value) and on the never-re-indexed one, their
    difference (the cost of not backfilling), the never-re-indexed value for old-class and
    new-class queries, the newest part's share of old-class queries' top K beside its share
    of the gallery, and the mean negative- and positive-flip rates over the updates."""
    from reports.tables import metric_title

    m = metric_title(metric)
    data: dict[str, list[float]] = {}
    order = _order(results, scenario, strategies)
    for s in order:
        rows = []
        for seed, entry in _cells(results, scenario, s):
            nri = entry.get("never_reindexed")
            if not nri:
                continue
            seen = results.seen.get((scenario, s, seed), {}).get(metric)
            curve = never_reindexed_curve(entry, metric)
            part = {}
            for name in ("old_classes", "new_classes"):
                sec = nri.get(name) or {}
                vals = (sec.get("map_at_r") if metric == "map_at_r"
                        else (sec.get("recall") or {}).get(metric.split("@")[-1]))
                part[name] = _float(vals[-1]) if vals else float("nan")
            shares = _array(nri["top_k_share_old"])[-1]
            sizes = _array(nri["gallery_share"])[-1]
            flips = [[_float(v) for v in nri[k][1:]] for k in ("negative_flip_rate",
                                                              "positive_flip_rate")]
            rows.append([
                float(seen[-1]) if seen is not None else float("nan"),
                float(curve[-1]) if curve is not None else float("nan"),
                (float(seen[-1]) - float(curve[-1])) if seen is not None and curve is not None
                else float("nan"),
                part["old_classes"], part["new_classes"], shares[-1], sizes[-1],
                *[float(np.mean(f)) if f and np.isfinite(f).all() else float("nan")
                  for f in flips]])
        if rows:
            data[s] = _column_means(rows)
    columns = [f"{m} re-embedded", f"{m} never re-indexed", "cost of not backfilling",
               f"{m} old-class queries", f"{m} new-class queries",
               "newest part in old queries' top K", "newest part of gallery",
               "negative flips", "positive flips"]
    if not data:
        return pd.DataFrame()
    return pd.DataFrame.from_dict(data, orient="index", columns=columns).rename_axis(
        "strategy")


def compatibility_table(results: Any, scenario: str,
                        strategies: list[str] | None = None) -> pd.DataFrame:
    """Per strategy (mean over seeds): AC, AM, BC, FC, the cross-test and backfill gains,
    the update gain pooled over the pairs and seeds (the mean cross-test gain over the
    mean backfill gain, on the seeds with both; NaN where backfilling would gain less than
    one point of Recall@1: ``metrics.compatibility.gain_ratio``) and the number of
    compatible pairs of M (Recall@1)."""
    data: dict[str, list[float]] = {}
    for s in _order(results, scenario, strategies):
        rows = []
        for _, entry in _cells(results, scenario, s):
            if not entry.get("compatibility"):
                continue
            summary = cell_summary(entry, "recall@1", None)
            m = _array(entry["compatibility"]["matrix"])
            rows.append([summary["ac"], summary["am"], summary["bc"], summary["fc"],
                         summary["cross_test_gain"], summary["backfill_gain"],
                         float(compatible_pairs(m).sum())])
        if rows:
            ac, am, bc, fc, cross, backfill, pairs = _column_means(rows)
            both = [r for r in rows if np.isfinite(r[4]) and np.isfinite(r[5])]
            gain = gain_ratio(*_column_means([r[4:6] for r in both])) if both else math.nan
            data[s] = [ac, am, bc, fc, cross, backfill, gain, pairs]
    if not data:
        return pd.DataFrame()
    return pd.DataFrame.from_dict(
        data, orient="index",
        columns=["AC", "AM", "BC", "FC", "cross-test gain", "backfill gain", "update gain",
                 "compatible pairs"]).rename_axis(
        "strategy")


def cells_csv(results: Any, scenario: str) -> str:
    """Every per-cell value behind this module's tables and figures: one row per cell and
    quantity (the summaries; per step the never-re-indexed values of every K and mAP@R, for
    all, old-class and new-class queries, the flip rates, the top-K shares per part; every
    entry of M and S), with the cell's config hash and commit. Empty text when none."""
    rows: list[dict[str, Any]] = []
    hashes = {(r.scenario, r.strategy, int(r.seed)): r.config_hash
              for r in results.cells.itertuples()}
    for key, entry in sorted(results.gallery.items()):
        if key[0] != scenario:
            continue
        base = {"scenario": key[0], "strategy": key[1], "seed": key[2]}
        tail = {"config_hash": hashes.get(key, ""),
                "commit": results.commits.get(key, "unknown"),
                "machine": results.machines.get(key, "unrecorded")}

        def add(quantity: str, value: Any, step: Any = "", part: Any = "",
                base: dict[str, Any] = base, tail: dict[str, str] = tail) -> None:
            rows.append({**base, "quantity": quantity, "step": step, "part": part,
                         "value": _float(value), **tail})

        for col, value in cell_summary(entry, "recall@1", results.seen.get(key, {}).get(
                "recall@1")).items():
            add(f"{col}@recall@1", value)
        nri = entry.get("never_reindexed") or {}
        for sec, prefix in (("", "nri"), ("old_classes", "nri_old"),
                            ("new_classes", "nri_new")):
            src = nri.get(sec) if sec else nri
            for k, values in ((src or {}).get("recall") or {}).items():
                for i, v in enumerate(values):
                    add(f"{prefix}@recall@{k}", v, i)
            for i, v in enumerate((src or {}).get("map_at_r") or []):
                add(f"{prefix}@map_at_r", v, i)
        for name in ("negative_flip_rate", "positive_flip_rate"):
            for i, v in enumerate(nri.get(name) or []):
                add(name, v, i)
        for name in ("top_k_share", "top_k_share_old", "top_k_share_new", "gallery_share"):
            for i, row in enumerate(nri.get(name) or []):
                for j, v in enumerate(row):
                    if v is not None:
                        add(name, v, i, j)
        comp = entry.get("compatibility") or {}
        for name, short in (("matrix", "M"), ("self_test", "S")):
            for i, row in enumerate(comp.get(name) or []):
                for j, v in enumerate(row):
                    if v is not None:
                        add(short, v, i, j)
    if not rows:
        return ""
    return pd.DataFrame(rows).to_csv(index=False, float_format="%.17g", lineterminator="\n")


# -- the report page -----------------------------------------------------------------------
def page_blocks(results: Any, scenario: str, metric: str,
                strategies: list[str] | None = None) -> list[tuple[str, str, object]]:
    """The report page's blocks for ``scenario`` (tables with their explanation), in the
    page's block format (``p`` text, ``cross`` a small numeric table); none for a store
    without the sections."""
    from reports.plots import slug
    from reports.tables import metric_title

    m = metric_title(metric)
    blocks: list[tuple[str, str, object]] = []
    table = gallery_table(results, scenario, metric, strategies)
    if not table.empty:
        updaters = sorted({k[1] for k, e in results.gallery.items() if k[0] == scenario
                           and (e.get("never_reindexed") or {}).get(
                               "gallery_vectors", "as embedded") != "as embedded"})
        blocks.append(("p", (
            f"**Never re-indexed** ({m}, mean over seeds, after the last experience): the "
            "gallery a deployed search holds, each experience's test images embedded once by "
            "the model after that experience and never re-embedded, searched with the final "
            "model's queries; beside it the re-embedded (seen-classes) value and their "
            "difference, **the cost of not backfilling**. Old-class queries are those of "
            "the classes of earlier experiences; the newest part's share of their top K "
            "(K = the largest evaluated) against its share of the gallery shows them "
            "drifting toward the newest embeddings. Negative flips: queries answered right "
            "at Recall@1 before an update and wrong after, over the same gallery images "
            "(PCT, Yan et al. CVPR 2021; RACT, Zhang et al. ICLR 2022), mean over the "
            "updates; positive flips the reverse."
            + (" Stored vectors updated without their images (drift compensation) by "
               f"{', '.join(updaters)}: the store records which parts, per experience."
               if updaters else "")
            + f" Per cell: `compatibility/{slug(scenario)}.csv`."), None))
        blocks.append(("cross", "", table))
    comp = compatibility_table(results, scenario, strategies)
    if not comp.empty:
        blocks.append(("p", (
            "**Compatibility** (Recall@1, mean over seeds): `M[i][j]` is model i's queries "
            "against model j's gallery on the classes seen by step j. AC: the fraction of "
            "pairs i > j meeting BCT's criterion `M[i][j] > M[j][j]` (strict); AM: the mean "
            "of M's lower triangle; BC: mean of `M[T][i] - M[i][i]`; FC: mean of "
            "`M[i][i-1] - M[i][i]` (CL2R, Biondi et al.); cross-test gain: mean of "
            "`M[i][j] - M[j][j]` over the pairs i > j (above 0: an update without "
            "backfilling beats keeping the old model); backfill gain: mean of "
            "`S[i][j] - M[j][j]`, with S the backfilled self-test (above 0: re-embedding "
            "old galleries with the newer model would help); update gain (BCT): the "
            "first over the second, pooled over pairs and seeds, the share of "
            "backfilling's gain reached without it, – where backfilling would gain less "
            "than 0.01 (a ratio of noise). "
            "Definitions: `docs/metrics.md`."), None))
        blocks.append(("cross", "", comp))
    return blocks
