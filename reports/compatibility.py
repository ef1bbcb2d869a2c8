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
* ``ac``, ``am``, ``bc``, ``fc``: CL2R's summaries of M; ``update_gain``: BCT's update
  gain, mean over the pairs where it is defined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metrics.compatibility import (
    average_accuracy,
    average_compatibility,
    backward_compatibility,
    forward_compatibility,
    update_gain,
)

#: per-cell columns this module adds to ``reports.load.summaries``
COLUMNS = ("final_nri", "nri_cost", "nfr", "ac", "am", "bc", "fc", "update_gain")

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
    "compatibility": "Compatibility matrix M[i][j]: Recall@1 of model i's queries against "
                     "model j's gallery, on the classes seen by step j (mean over seeds; "
                     "* marks BCT's criterion M[i][j] > M[j][j] met by the mean)",
}


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
                   bc=backward_compatibility(m), fc=forward_compatibility(m))
        if comp.get("self_test") is not None:
            g = update_gain(m, _array(comp["self_test"]))
            defined = g[np.isfinite(g)]
            out["update_gain"] = float(defined.mean()) if defined.size else float("nan")
    return out


def add_summary_columns(out: pd.DataFrame, results: Any, metric: str) -> pd.DataFrame:
    """``out`` (one row per cell, :func:`reports.load.summaries`) with :data:`COLUMNS`."""
    rows = [cell_summary(results.gallery.get((r.scenario, r.strategy, r.seed)), metric,
                         results.seen.get((r.scenario, r.strategy, r.seed), {}).get(metric))
            for r in out.itertuples()]
    for col in COLUMNS:
        out[col] = [row[col] for row in rows] if rows else []
    return out


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
    """Per strategy (mean over seeds): AC, AM, BC, FC, the update gain and the number of
    compatible pairs of M (Recall@1)."""
    data: dict[str, list[float]] = {}
    for s in _order(results, scenario, strategies):
        rows = []
        for _, entry in _cells(results, scenario, s):
            if not entry.get("compatibility"):
                continue
            summary = cell_summary(entry, "recall@1", None)
            m = _array(entry["compatibility"]["matrix"])
            from metrics.compatibility import compatible_pairs

            rows.append([summary["ac"], summary["am"], summary["bc"], summary["fc"],
                         summary["update_gain"], float(compatible_pairs(m).sum())])
        if rows:
            data[s] = _column_means(rows)
    if not data:
        return pd.DataFrame()
    return pd.DataFrame.from_dict(
        data, orient="index",
        columns=["AC", "AM", "BC", "FC", "update gain", "compatible pairs"]).rename_axis(
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
                "commit": results.commits.get(key, "unknown")}

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


# -- figures ----------------------------------------------------------------------------------
def figures(results: Any, scenario: str, metric: str, out: Path, formats: list[str]
            ) -> dict[str, list[Path]]:
    """Every figure of this module for ``scenario``: ``"<kind>/<scenario>"`` -> files
    (nothing for a store without the sections)."""
    if not any(k[0] == scenario for k in results.gallery):
        return {}
    made = {"never_reindexed": never_reindexed_curves(results, scenario, metric, out, formats),
            "gallery_drift": gallery_drift(results, scenario, out, formats),
            "compatibility": compatibility_heatmaps(results, scenario, out, formats)}
    return {f"{kind}/{scenario}": paths for kind, paths in made.items() if paths}


def never_reindexed_curves(results: Any, scenario: str, metric: str, out: Path,
                           formats: list[str]) -> list[Path]:
    """A panel per strategy: ``metric`` after each experience on the re-embedded gallery
    (solid) and on the never-re-indexed one (dashed), mean over seeds with 95% t bands."""
    import matplotlib.pyplot as plt

    from reports.plots import COLUMN_WIDTH, FONT_SIZE, STYLE, _save, colours
    from reports.tables import metric_title, t_interval

    order = _order(results, scenario, None)
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for s in order:
        for seed, entry in _cells(results, scenario, s):
            nri = never_reindexed_curve(entry, metric)
            seen = results.seen.get((scenario, s, seed), {}).get(metric)
            if nri is not None and seen is not None:
                curves.setdefault(s, []).append((np.asarray(seen, float), nri))
    if not curves:
        return []
    names = list(curves)
    pal = colours(list(dict.fromkeys(results.cells.strategy)))
    cols = min(len(names), 4)
    rows = int(np.ceil(len(names) / cols))
    t = len(next(iter(curves.values()))[0][0])
    x = np.arange(t)
    means = np.concatenate([np.nanmean([c[i] for c in v], axis=0) for v in curves.values()
                            for i in (0, 1)])
    pad = 0.05 * max(float(np.nanmax(means) - np.nanmin(means)), 0.1)
    low, high = max(0.0, float(np.nanmin(means)) - pad), min(1.0, float(np.nanmax(means)) + pad)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(cols * COLUMN_WIDTH * 0.62,
                                                      rows * 1.75 + 0.4),
                                 squeeze=False, sharex=True, sharey=True)
        for ax, s in zip(axes.flat, names, strict=False):
            colour = pal.get(s, (0.2, 0.2, 0.2))
            for idx, style in ((0, "-"), (1, "--")):
                values = np.array([c[idx] for c in curves[s]])
                mean = np.nanmean(values, axis=0)
                ax.plot(x, mean, ls=style, color=colour, lw=1.2, marker="o", markersize=2.5)
                if len(values) > 1:
                    lo, hi = np.array([t_interval(pd.Series(values[:, i]))
                                       for i in range(t)]).T
                    ax.fill_between(x, np.clip(lo, low, high), np.clip(hi, low, high),
                                    color=colour, alpha=0.08, lw=0)
            seen_mean = np.nanmean([c[0] for c in curves[s]], axis=0)
            nri_mean = np.nanmean([c[1] for c in curves[s]], axis=0)
            ax.fill_between(x, nri_mean, seen_mean, color=colour, alpha=0.3, lw=0)
            ax.set_title(f"{s} (cost {seen_mean[-1] - nri_mean[-1]:+.3f})",
                         fontsize=FONT_SIZE)
            ax.grid(alpha=0.3)
            ax.set_xticks(x)
            ax.set_ylim(low, high)
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        for ax in axes[:, 0]:
            ax.set_ylabel(metric_title(metric))
        for ax in axes[-1, :]:
            ax.set_xlabel("after experience")
        fig.suptitle(f"{scenario}: {metric_title(metric)}, gallery re-embedded (solid) vs "
                     "never re-indexed (dashed)", fontsize=FONT_SIZE + 1)
        return _save(fig, out, f"never_reindexed_{scenario}_{metric}", formats)


def gallery_drift(results: Any, scenario: str, out: Path, formats: list[str]) -> list[Path]:
    """Two panels over the updates (experiences 1..T-1): the newest gallery part's share of
    old-class queries' top K per strategy, with its share of the gallery (dashed black);
    and the negative-flip rate per strategy."""
    import matplotlib.pyplot as plt

    from reports.plots import COLUMN_WIDTH, STYLE, _save, colours

    order = _order(results, scenario, None)
    share: dict[str, list[np.ndarray]] = {}
    flips: dict[str, list[np.ndarray]] = {}
    base: list[np.ndarray] = []
    top_k = None
    for s in order:
        for _, entry in _cells(results, scenario, s):
            nri = entry.get("never_reindexed")
            if not nri:
                continue
            old = _array(nri["top_k_share_old"])
            t = old.shape[0]
            share.setdefault(s, []).append(np.array([old[i, i] for i in range(t)]))
            size = _array(nri["gallery_share"])
            base.append(np.array([size[i, i] for i in range(t)]))
            flips.setdefault(s, []).append(np.array(
                [_float(v) for v in nri["negative_flip_rate"]]))
            top_k = nri.get("top_k", top_k)
    if not share or len(base[0]) < 2:
        return []
    pal = colours(list(dict.fromkeys(results.cells.strategy)))
    t = len(base[0])
    x = np.arange(1, t)
    with plt.rc_context(STYLE):
        fig, (a, b) = plt.subplots(1, 2, figsize=(COLUMN_WIDTH * 2, 2.4))
        for s in share:
            a.plot(x, np.nanmean(np.array(share[s])[:, 1:], axis=0), color=pal.get(s),
                   marker="o",
                   markersize=2.5, lw=1.1, label=s)
            b.plot(x, np.nanmean(np.array(flips[s])[:, 1:], axis=0), color=pal.get(s),
                   marker="o",
                   markersize=2.5, lw=1.1, label=s)
        a.plot(x, np.nanmean(np.array(base)[:, 1:], axis=0), color="black", ls="--", lw=1.2,
               label="newest part of gallery")
        a.set_ylabel(f"newest part in old-class top {top_k}")
        b.set_ylabel("negative-flip rate (R@1)")
        for ax in (a, b):
            ax.set_xlabel("after experience")
            ax.set_xticks(x)
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
        a.legend(loc="upper left", bbox_to_anchor=(2.25, 1.0), frameon=False)
        fig.suptitle(f"{scenario}: never-re-indexed gallery, old-class queries and flips")
        return _save(fig, out, f"gallery_drift_{scenario}", formats)


def compatibility_heatmaps(results: Any, scenario: str, out: Path, formats: list[str]
                           ) -> list[Path]:
    """One annotated heatmap of the mean M per strategy (lower triangle), one shared colour
    scale; a ``*`` marks pairs where the mean meets BCT's criterion."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from metrics.compatibility import compatible_pairs
    from reports.plots import FONT_SIZE, STYLE, _save

    mats: dict[str, np.ndarray] = {}
    for s in _order(results, scenario, None):
        got = [_array(e["compatibility"]["matrix"]) for _, e in _cells(results, scenario, s)
               if e.get("compatibility")]
        if got:
            mats[s] = np.mean(got, axis=0)
    if not mats:
        return []
    n = len(mats)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    t = next(iter(mats.values())).shape[0]
    cell = max(0.28, min(0.5, 1.9 / t))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(cols * (t * cell + 0.5) + 0.8,
                                                      rows * (t * cell + 0.6)),
                                 squeeze=False, sharex=True, sharey=True)
        lower = np.concatenate([m[np.tril_indices(t)] for m in mats.values()])
        vmin, vmax = float(np.nanmin(lower)), float(np.nanmax(lower))
        for ax, (s, mat) in zip(axes.flat, mats.items(), strict=False):
            ok = compatible_pairs(mat)
            text = np.array([[f"{mat[i, j]:.2f}{'*' if ok[i, j] else ''}" for j in range(t)]
                             for i in range(t)])
            sns.heatmap(mat, mask=np.triu(np.ones_like(mat, dtype=bool), k=1), ax=ax,
                        vmin=vmin, vmax=vmax, cmap="viridis", annot=text if t <= 8 else False,
                        fmt="", annot_kws={"size": FONT_SIZE - 2}, cbar=False, square=True,
                        linewidths=0.3, linecolor="white")
            ax.set_title(f"{s} (AC of the mean {average_compatibility(mat):.2f})")
        for ax in axes.flat[n:]:
            ax.axis("off")
        for ax in axes[:, 0]:
            ax.set_ylabel("queries: model i")
        for ax in axes[-1, :]:
            ax.set_xlabel("gallery: model j")
        fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap="viridis"),
                     ax=axes, shrink=0.8, label="R@1")
        fig.suptitle(f"{scenario}: compatibility matrix M (R@1, mean over seeds)",
                     fontsize=FONT_SIZE + 1)
        return _save(fig, out, f"compatibility_{scenario}", formats)


# -- the report page -----------------------------------------------------------------------
def page_blocks(results: Any, scenario: str, metric: str,
                strategies: list[str] | None = None) -> list[tuple[str, str, object]]:
    """The report page's blocks for ``scenario`` (tables with their explanation), in the
    page's block format (``p`` text, ``cross`` a small numeric table); none for a store
    without the sections."""
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
            + f" Per cell: `compatibility/{scenario}.csv`."), None))
        blocks.append(("cross", "", table))
    comp = compatibility_table(results, scenario, strategies)
    if not comp.empty:
        blocks.append(("p", (
            "**Compatibility** (Recall@1, mean over seeds): M[i][j] is model i's queries "
            "against model j's gallery on the classes seen by step j. AC: the fraction of "
            "pairs i > j meeting BCT's criterion M[i][j] > M[j][j] (strict); AM: the mean of "
            "M's lower triangle; BC: mean of M[T][i] - M[i][i]; FC: mean of M[i][i-1] - "
            "M[i][i] (CL2R, Biondi et al.); update gain: (M[i][j] - M[j][j]) / (S[i][j] - "
            "M[j][j]) with S the backfilled self-test (BCT), mean over the pairs where "
            "backfilling would help. Definitions: `docs/metrics.md`."), None))
        blocks.append(("cross", "", comp))
    return blocks
