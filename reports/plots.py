"""Report figures (seaborn/matplotlib), sized for a paper column and a colour-blind-safe palette.

Each function writes one figure per requested format (``png``, ``svg``) and returns the
paths. Every figure of a scenario shares one colour per strategy.

* :func:`r_matrix_heatmaps`: the mean R matrix of each strategy, annotated, one colour
  scale shared by all strategies of a scenario;
* :func:`seen_curves`: the headline over the stream, the seen-gallery value after each
  experience, a line per strategy labelled at its end, band = 95% Student-t CI over seeds
  (:func:`metrics.statistics.t_interval`, as in the CSV tables); the untrained reference
  (``pretrained``) as a dashed black line;
* :func:`task_curves`: a panel per strategy, each task's value across the stream;
* :func:`tradeoff_scatter`: final seen value against forgetting (plasticity vs
  stability), error bars = 95% t CIs, the untrained reference as a dashed line;
* :func:`recall_bars`: final mean Recall@K per strategy, grouped by K, 95% t CIs;

The figures that compare strategies with each other (ablation deltas, the
critical-difference diagram) are in :mod:`reports.comparison_plots`.

The comparison figures draw the comparison table's strategies; ablation variants have
their own figure (see :func:`reports.page.build_report`).

With one seed, or seeds that all gave the same value, there is no band or bar (the CI is
undefined or degenerate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from metrics.io import atomic_write  # noqa: E402
from reports.load import Results, summaries  # noqa: E402
from reports.tables import (  # noqa: E402
    REFERENCE,
    column_title,
    metric_title,
    t_interval,
)

#: one paper column (inches), and the font size that stays legible at that width
COLUMN_WIDTH = 3.5
FONT_SIZE = 8
PALETTE = "colorblind"
#: the untrained reference's colour in every figure (a dashed line in curves and scatters)
REFERENCE_COLOUR = "black"

STYLE = {
    "font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1, "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE - 1, "ytick.labelsize": FONT_SIZE - 1,
    "legend.fontsize": FONT_SIZE - 1, "legend.title_fontsize": FONT_SIZE,
    "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight",
    "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False,
}


def slug(text: str) -> str:
    """A name safe for a file: letters, digits, '-', '_' and '.' kept, the rest '-'."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _save(fig: plt.Figure, out: Path, stem: str, formats: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{slug(stem)}.{fmt}"
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt))
        paths.append(path)
    plt.close(fig)
    return paths


def colours(strategies: list[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed colour per strategy (the palette cycles past 10 strategies: see
    :func:`markers` and :func:`dashes`, which tell the cycles apart)."""
    pal = sns.color_palette(PALETTE, n_colors=max(len(strategies), 1))
    return {s: pal[i % len(pal)] for i, s in enumerate(strategies)}


#: per cycle of the palette's 10 colours: the marker and line dashes of its strategies
CYCLE_MARKERS = ("o", "s", "^", "D")
CYCLE_DASHES: tuple[tuple[float, ...], ...] = ((), (4.0, 1.5), (1.0, 1.0), (4.0, 1.0, 1.0, 1.0))
CYCLE_HATCHES = ("", "////", "....", "xxxx")


def _cycle(strategies: list[str]) -> dict[str, int]:
    n = len(sns.color_palette(PALETTE))
    return {s: (i // n) % len(CYCLE_MARKERS) for i, s in enumerate(strategies)}


def markers(strategies: list[str]) -> dict[str, str]:
    """A marker per strategy: the same for the first 10, another for each further 10, so
    that two strategies sharing a colour never share a marker."""
    return {s: CYCLE_MARKERS[c] for s, c in _cycle(strategies).items()}


def dashes(strategies: list[str]) -> dict[str, tuple[float, ...]]:
    """Line dashes per strategy, solid for the first 10 (as :func:`markers`)."""
    return {s: CYCLE_DASHES[c] for s, c in _cycle(strategies).items()}


def text_colour(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """``rgb`` darkened until text in it reads on white (the palette's yellow and light
    blue do not): relative luminance at most 0.45, hue kept."""
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    f = min(1.0, 0.45 / lum) if lum > 0 else 1.0
    return (rgb[0] * f, rgb[1] * f, rgb[2] * f)


def mean_matrices(results: Results, scenario: str, metric: str) -> dict[str, np.ndarray]:
    """Mean R matrix over seeds of each strategy in ``scenario``."""
    out: dict[str, list[np.ndarray]] = {}
    for (sc, strategy, _seed), mats in results.matrices.items():
        if sc == scenario:
            out.setdefault(strategy, []).append(mats[metric])
    order = [s for s in dict.fromkeys(results.cells.strategy) if s in out]
    return {s: np.mean(out[s], axis=0) for s in order}


def heatmap_grid(mats: dict[str, np.ndarray]) -> tuple[Any, Any, int, float, float]:
    """Axes for one lower-triangular heatmap per matrix (up to 4 a row), sized to the
    matrices, and the colour range their lower triangles share: (fig, axes, t, vmin,
    vmax). Call inside ``plt.rc_context(STYLE)``."""
    n = len(mats)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    t = next(iter(mats.values())).shape[0]
    cell = max(0.28, min(0.5, 1.9 / t))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (t * cell + 0.5) + 0.8,
                                                  rows * (t * cell + 0.6)),
                             squeeze=False, sharex=True, sharey=True)
    lower = np.concatenate([m[np.tril_indices(t)] for m in mats.values()])
    return fig, axes, t, float(np.nanmin(lower)), float(np.nanmax(lower))


def finish_grid(fig: Any, axes: Any, n: int, vmin: float, vmax: float, ylabel: str,
                xlabel: str, label: str) -> None:
    """Blank the unused axes of :func:`heatmap_grid`, label the outer ones and add the
    shared colour bar."""
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes[-1, :]:
        ax.set_xlabel(xlabel)
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap="viridis"),
                 ax=axes, shrink=0.8, label=label)


def r_matrix_heatmaps(results: Results, scenario: str, metric: str, out: Path,
                      formats: list[str]) -> list[Path]:
    """One figure: an annotated heatmap per strategy, a shared colour scale."""
    mats = mean_matrices(results, scenario, metric)
    with plt.rc_context(STYLE):
        fig, axes, t, vmin, vmax = heatmap_grid(mats)
        n = len(mats)
        for ax, (strategy, mat) in zip(axes.flat, mats.items(), strict=False):
            mask = np.triu(np.ones_like(mat, dtype=bool), k=1)
            sns.heatmap(mat, mask=mask, ax=ax, vmin=vmin, vmax=vmax, cmap="viridis",
                        annot=t <= 8, fmt=".2f", annot_kws={"size": FONT_SIZE - 2},
                        cbar=False, square=True, linewidths=0.3, linecolor="white")
            ax.set_title(strategy)
        finish_grid(fig, axes, n, vmin, vmax, "after training exp.", "evaluated on exp.",
                    metric_title(metric))
        fig.suptitle(f"{scenario}: R matrix ({metric_title(metric)}, mean over seeds)",
                     fontsize=FONT_SIZE + 1)
        return _save(fig, out, f"r_matrix_{scenario}_{metric}", formats)


def seen_curves(results: Results, scenario: str, metric: str, out: Path,
                formats: list[str], reference: str = REFERENCE) -> list[Path]:
    """The headline over the stream: ``metric`` on the seen gallery (every class learnt so
    far, searched together) after each experience, a line per strategy, band = 95% t CI
    over seeds, each line labelled at its end (labels spread, never on top of each
    other); the untrained ``reference``, when it ran, as a dashed black line (what not
    learning at all retrieves on the same galleries). Nothing is drawn for stores without
    seen curves."""
    rows = [{"strategy": st, "seed": seed, "after": i, "value": v}
            for (sc, st, seed), curves in results.seen.items() if sc == scenario
            and metric in curves for i, v in enumerate(curves[metric])]
    if not rows:
        return []
    data = pd.DataFrame(rows)
    strategies = [s for s in dict.fromkeys(results.cells.strategy) if s in set(data.strategy)]
    t = int(data.after.max()) + 1
    pal = colours(strategies)
    ref = data[data.strategy == reference]
    drawn = [s for s in strategies if s != reference]
    # tall enough for one label per line at the right end, a text line apart
    height = max(2.6, (len(strategies) + 2) * (FONT_SIZE + 1.5) / 72 + 0.9)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.35, height))
        sns.lineplot(data=data[data.strategy.isin(drawn)], x="after", y="value",
                     hue="strategy", hue_order=drawn, palette=pal, errorbar=t_interval,
                     style="strategy", style_order=drawn, markers=markers(drawn),
                     dashes=dashes(drawn), markersize=3, linewidth=1.2, ax=ax,
                     legend=False, err_kws={"alpha": 0.08})
        ends = data[data.after == t - 1].groupby("strategy")["value"].mean()
        labels = {s: float(ends[s]) for s in drawn if s in ends}
        if len(ref):
            curve = ref.groupby("after")["value"].mean()
            ax.plot(curve.index, curve.to_numpy(), color=REFERENCE_COLOUR, ls="--", lw=1.3,
                    zorder=5)
            pal = {**pal, f"{reference} (untrained)": matplotlib.colors.to_rgb(REFERENCE_COLOUR)}
            labels[f"{reference} (untrained)"] = float(curve.iloc[-1])
        _direct_labels(ax, labels, t - 1, pal)
        ax.set_xticks(range(t))
        ax.set_xlim(-0.2, t - 1 + 0.2)
        ax.set_xlabel("after training experience")
        ax.set_ylabel(f"{metric_title(metric)}, seen-classes gallery")
        ax.set_title(f"{scenario}: {metric_title(metric)} on every class seen so far")
        ax.grid(alpha=0.3)
        return _save(fig, out, f"seen_curves_{scenario}_{metric}", formats)


def _direct_labels(ax: plt.Axes, ends: dict[str, float], x: float,
                   pal: dict[str, tuple[float, float, float]]) -> None:
    """Label each line at its right end; labels closer than a line of text are pushed
    apart (in order of their values), with a thin leader to the line's end."""
    if not ends:
        return
    lo, hi = ax.get_ylim()
    height = ax.get_window_extent().height or 1.0
    gap = (FONT_SIZE + 1.5) * (hi - lo) / height * (ax.figure.dpi / 72)
    names = sorted(ends, key=ends.get)
    ys = [ends[n] for n in names]
    placed: list[float] = []
    for y in ys:
        placed.append(max(y, placed[-1] + gap) if placed else y)
    shift = max(0.0, placed[-1] - hi) if placed else 0.0  # keep the top label inside
    for name, y, y_text in zip(names, ys, placed, strict=True):
        # the leader stops short of the label column, so that a steep leader never runs
        # through the start of another line's label
        ax.plot([x, x + 0.25], [y, y_text - shift], color=pal[name], lw=0.5, clip_on=False)
        ax.text(x + 0.3, y_text - shift, name, fontsize=FONT_SIZE - 1, va="center",
                color=text_colour(pal[name]), clip_on=False)


def task_curves(results: Results, scenario: str, metric: str, out: Path,
                formats: list[str]) -> list[Path]:
    """One panel per strategy: each task's value after each training experience (a line
    per task, a sequential colour from the first task to the last), band = 95% bootstrap
    CI over seeds, and the seen-gallery curve dashed. Faceting by strategy keeps every
    strategy readable with ten of them; panels share their axes for comparison."""
    rows = []
    for (sc, strategy, seed), mats in results.matrices.items():
        if sc != scenario:
            continue
        mat = mats[metric]
        for j in range(mat.shape[0]):
            for i in range(j, mat.shape[0]):
                rows.append({"strategy": strategy, "seed": seed, "task": j,
                             "after": i, "value": mat[i, j]})
    data = pd.DataFrame(rows)
    strategies = [s for s in dict.fromkeys(results.cells.strategy) if s in set(data.strategy)]
    t = int(data.task.max()) + 1
    cols = min(len(strategies), 4)
    nrows = int(np.ceil(len(strategies) / cols))
    tasks = sns.color_palette("viridis", n_colors=t)
    seen = [{"strategy": st, "seed": seed, "after": i, "value": v}
            for (sc, st, seed), curves in results.seen.items() if sc == scenario
            and metric in curves for i, v in enumerate(curves[metric])]
    seen_data = pd.DataFrame(seen)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, cols, figsize=(1.9 * cols + 0.6, 1.7 * nrows + 0.7),
                                 squeeze=False, sharex=True, sharey=True)
        for k, ax in enumerate(axes.flat):
            if k >= len(strategies):
                ax.axis("off")
                continue
            st = strategies[k]
            sns.lineplot(data=data[data.strategy == st], x="after", y="value", hue="task",
                         palette=tasks, errorbar=t_interval, marker="o", markersize=2.5,
                         linewidth=1.0, ax=ax, legend=False, err_kws={"alpha": 0.15})
            if len(seen_data):
                sns.lineplot(data=seen_data[seen_data.strategy == st], x="after", y="value",
                             color=REFERENCE_COLOUR, linestyle="--", linewidth=1.0, errorbar=None,
                             ax=ax, legend=False)
            ax.set_title(st)
            ax.set_xticks(range(t))
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("after training exp." if k // cols == nrows - 1 else "")
            ax.set_ylabel(metric_title(metric) if k % cols == 0 else "")
            ax.grid(alpha=0.3)
        handles = [plt.Line2D([], [], color=tasks[j], marker="o", ms=3, lw=1)
                   for j in range(t)]
        labels = [f"task {j}" for j in range(t)]
        if len(seen_data):
            handles.append(plt.Line2D([], [], color=REFERENCE_COLOUR, ls="--", lw=1))
            labels.append("seen gallery")
        top = 1 - 0.55 / fig.get_figheight()  # room for the title and the legend
        fig.tight_layout(rect=(0, 0, 1, top))
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7),
                   bbox_to_anchor=(0.5, top), frameon=False)
        fig.suptitle(f"{scenario}: each task's {metric_title(metric)} (own gallery) across "
                     "the stream", y=1.0, va="top", fontsize=FONT_SIZE + 1)
        return _save(fig, out, f"task_curves_{scenario}_{metric}", formats)


def _ci_err(values: pd.Series) -> np.ndarray | None:
    """Asymmetric error bar (2 x 1) of the t CI around the mean; None if undefined."""
    low, high = t_interval(values)
    if not np.isfinite(low):
        return None
    mean = float(values.mean())
    return np.array([[max(mean - low, 0.0)], [max(high - mean, 0.0)]])


def tradeoff_scatter(results: Results, scenario: str, metric: str, out: Path,
                     formats: list[str], reference: str = REFERENCE) -> list[Path]:
    """The headline (final value on the seen-classes gallery; the final per-task mean for
    stores without seen curves) against forgetting, mean and 95% t CI over seeds per
    strategy; the untrained ``reference``, when it ran, as a dashed horizontal line."""
    cells = summaries(results, metric)
    sc = cells[cells.scenario == scenario]
    strategies = list(dict.fromkeys(sc.strategy))
    pal, marks = colours(strategies), markers(strategies)
    seen = bool(sc["final_seen"].notna().any())
    ycol = "final_seen" if seen else f"final:{metric}"
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
        for s in strategies:
            g = sc[sc.strategy == s]
            x, y = g["forgetting"].astype(float), g[ycol].astype(float)
            if s == reference:
                ax.axhline(y.mean(), color=REFERENCE_COLOUR, ls="--", lw=1.1,
                           label=f"{reference} (untrained)")
                continue
            ax.errorbar(x.mean(), y.mean(), xerr=_ci_err(x), yerr=_ci_err(y), fmt=marks[s],
                        ms=5, color=pal[s], capsize=2, elinewidth=0.8, label=s)
        # a legend, not labels at the points: points close together would overprint them;
        # its handles are markers alone (error-bar caps would hide the marker's shape)
        handles, labels = [], []
        for s in strategies:
            if s == reference:
                handles.append(plt.Line2D([], [], color=REFERENCE_COLOUR, ls="--", lw=1.1))
                labels.append(f"{reference} (untrained)")
            else:
                handles.append(plt.Line2D([], [], color=pal[s], marker=marks[s], ls="",
                                          ms=5))
                labels.append(s)
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  frameon=False)
        ax.set_xlabel(f"forgetting ({metric_title(metric)}, lower is better)")
        ax.set_ylabel(column_title("final_seen", metric_title(metric)) if seen
                      else f"final {metric_title(metric)}, per-task galleries")
        ax.set_title(f"{scenario}: plasticity vs stability")
        ax.grid(alpha=0.3)
        return _save(fig, out, f"tradeoff_{scenario}_{metric}", formats)


def recall_bars(results: Results, scenario: str, out: Path, formats: list[str]) -> list[Path]:
    """Final mean Recall@K of each strategy, bars grouped by K, error bars = 95% CI."""
    recalls = [m for m in results.metrics if m.startswith("recall@")]
    cells = results.cells[results.cells.scenario == scenario]
    data = cells.melt(id_vars=["strategy", "seed"], value_vars=[f"final:{m}" for m in recalls],
                      var_name="K", value_name="value")
    data["K"] = data["K"].str.replace("final:recall@", "R@", regex=False)
    strategies = list(dict.fromkeys(cells.strategy))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(COLUMN_WIDTH, 0.45 * len(strategies) * len(recalls)
                                            / 2), 2.4))
        sns.barplot(data=data, x="K", y="value", hue="strategy", hue_order=strategies,
                    palette=colours(strategies), errorbar=t_interval, err_kws={"linewidth": 0.8},
                    capsize=0.1, ax=ax)
        # bars have no marker: a strategy that shares a palette colour gets a hatch
        for container, cycle in zip(ax.containers, _cycle(strategies).values(), strict=False):
            for bar in container:
                bar.set_hatch(CYCLE_HATCHES[cycle])
        ax.set_xlabel("")
        ax.set_ylabel("final mean Recall@K")
        ax.set_ylim(0, 1)
        ax.set_title(f"{scenario}: final Recall@K over all tasks")
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        for patch, cycle in zip(legend.get_patches(), _cycle(strategies).values(),
                                strict=False):
            patch.set_hatch(CYCLE_HATCHES[cycle])
        return _save(fig, out, f"recall_bars_{scenario}", formats)
