"""The figures of the never-re-indexed gallery and the compatibility of models (captions:
:data:`reports.compatibility.FIGURE_TITLES`): the re-embedded against the never-re-indexed
curve, where old-class queries look and the negative flips, and the matrix M as heatmaps.
Nothing is drawn for a store without the sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metrics.compatibility import average_compatibility
from reports.compatibility import _cells, _order
from reports.compatibility_columns import _array, _float, never_reindexed_curve


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

    from reports.plots import COLUMN_WIDTH, STYLE, _save, colours, dashes, markers

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
    every = list(dict.fromkeys(results.cells.strategy))
    pal, marks, dash = colours(every), markers(every), dashes(every)
    t = len(base[0])
    x = np.arange(1, t)
    with plt.rc_context(STYLE):
        fig, (a, b) = plt.subplots(1, 2, figsize=(COLUMN_WIDTH * 2, 2.4))
        for s in share:
            # a strategy sharing a palette colour has another marker and dashes
            style = {"color": pal.get(s), "marker": marks.get(s, "o"), "markersize": 2.5,
                     "lw": 1.1, "label": s, "dashes": dash.get(s, ())}
            a.plot(x, np.nanmean(np.array(share[s])[:, 1:], axis=0), **style)
            b.plot(x, np.nanmean(np.array(flips[s])[:, 1:], axis=0), **style)
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
    from reports.plots import FONT_SIZE, STYLE, _save, finish_grid, heatmap_grid

    mats: dict[str, np.ndarray] = {}
    for s in _order(results, scenario, None):
        got = [_array(e["compatibility"]["matrix"]) for _, e in _cells(results, scenario, s)
               if e.get("compatibility")]
        if got:
            mats[s] = np.mean(got, axis=0)
    if not mats:
        return []
    with plt.rc_context(STYLE):
        fig, axes, t, vmin, vmax = heatmap_grid(mats)
        n = len(mats)
        for ax, (s, mat) in zip(axes.flat, mats.items(), strict=False):
            ok = compatible_pairs(mat)
            text = np.array([[f"{mat[i, j]:.2f}{'*' if ok[i, j] else ''}" for j in range(t)]
                             for i in range(t)])
            sns.heatmap(mat, mask=np.triu(np.ones_like(mat, dtype=bool), k=1), ax=ax,
                        vmin=vmin, vmax=vmax, cmap="viridis", annot=text if t <= 8 else False,
                        fmt="", annot_kws={"size": FONT_SIZE - 2}, cbar=False, square=True,
                        linewidths=0.3, linecolor="white")
            ax.set_title(f"{s}: AC {average_compatibility(mat):.2f}")
        finish_grid(fig, axes, n, vmin, vmax, "queries: model i", "gallery: model j", "R@1")
        fig.suptitle(f"{scenario}: compatibility matrix M (R@1, mean over seeds); * and AC: "
                     "M[i][j] > M[j][j] on the mean matrix", fontsize=FONT_SIZE + 1)
        return _save(fig, out, f"compatibility_{scenario}", formats)
