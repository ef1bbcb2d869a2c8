"""Report figures (seaborn/matplotlib), sized for a paper column and a colour-blind-safe palette.

Each function writes one figure per requested format (``png``, ``svg``) and returns the
paths. Every figure of a scenario shares one colour per strategy.

* :func:`r_matrix_heatmaps`: the mean R matrix of each strategy, annotated, one colour
  scale shared by all strategies of a scenario;
* :func:`task_curves`: each task's value across the stream, a line per strategy, band =
  95% bootstrap CI over seeds (:func:`reports.tables.bootstrap_ci`, as in the CSV tables);
* :func:`tradeoff_scatter`: final value against forgetting (plasticity vs stability),
  error bars = 95% bootstrap CIs;
* :func:`recall_bars`: final mean Recall@K per strategy, grouped by K, 95% bootstrap CIs.

With one seed, or seeds that all gave the same value, there is no band or bar (the CI is
undefined or degenerate).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.load import Results, summaries  # noqa: E402
from reports.tables import bootstrap_ci, metric_title  # noqa: E402

#: one paper column (inches), and the font size that stays legible at that width
COLUMN_WIDTH = 3.5
FONT_SIZE = 8
PALETTE = "colorblind"

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
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def colours(strategies: list[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed colour per strategy (the palette cycles past 10 strategies)."""
    pal = sns.color_palette(PALETTE, n_colors=max(len(strategies), 1))
    return {s: pal[i % len(pal)] for i, s in enumerate(strategies)}


def mean_matrices(results: Results, scenario: str, metric: str) -> dict[str, np.ndarray]:
    """Mean R matrix over seeds of each strategy in ``scenario``."""
    out: dict[str, list[np.ndarray]] = {}
    for (sc, strategy, _seed), mats in results.matrices.items():
        if sc == scenario:
            out.setdefault(strategy, []).append(mats[metric])
    order = [s for s in dict.fromkeys(results.cells.strategy) if s in out]
    return {s: np.mean(out[s], axis=0) for s in order}


def r_matrix_heatmaps(results: Results, scenario: str, metric: str, out: Path,
                      formats: list[str]) -> list[Path]:
    """One figure: an annotated heatmap per strategy, a shared colour scale."""
    mats = mean_matrices(results, scenario, metric)
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
        for ax, (strategy, mat) in zip(axes.flat, mats.items(), strict=False):
            mask = np.triu(np.ones_like(mat, dtype=bool), k=1)
            sns.heatmap(mat, mask=mask, ax=ax, vmin=vmin, vmax=vmax, cmap="viridis",
                        annot=t <= 8, fmt=".2f", annot_kws={"size": FONT_SIZE - 2},
                        cbar=False, square=True, linewidths=0.3, linecolor="white")
            ax.set_title(strategy)
        for ax in axes.flat[n:]:
            ax.axis("off")
        for ax in axes[:, 0]:
            ax.set_ylabel("after training exp.")
        for ax in axes[-1, :]:
            ax.set_xlabel("evaluated on exp.")
        fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap="viridis"),
                     ax=axes, shrink=0.8, label=metric_title(metric))
        fig.suptitle(f"{scenario}: R matrix ({metric_title(metric)}, mean over seeds)",
                     fontsize=FONT_SIZE + 1)
        return _save(fig, out, f"r_matrix_{scenario}_{metric}", formats)


def task_curves(results: Results, scenario: str, metric: str, out: Path,
                formats: list[str]) -> list[Path]:
    """One panel per task: its value after each training experience, per strategy."""
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
    cols = min(t, 3)
    nrows = int(np.ceil(t / cols))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, cols, figsize=(COLUMN_WIDTH * cols / 1.6,
                                                       1.9 * nrows + 0.4),
                                 squeeze=False, sharey=True)
        for j, ax in enumerate(axes.flat):
            if j >= t:
                ax.axis("off")
                continue
            sns.lineplot(data=data[data.task == j], x="after", y="value", hue="strategy",
                         hue_order=strategies, palette=colours(strategies),
                         errorbar=bootstrap_ci, marker="o", markersize=3, linewidth=1.2, ax=ax,
                         legend=j == 0)
            ax.set_title(f"task {j}")
            ax.set_xlabel("after training exp.")
            ax.set_ylabel(metric_title(metric))
            ax.set_xticks(range(j, t))
        if axes.flat[0].get_legend() is not None:
            handles, labels = axes.flat[0].get_legend_handles_labels()
            axes.flat[0].get_legend().remove()
            fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5),
                       bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.tight_layout()
        return _save(fig, out, f"task_curves_{scenario}_{metric}", formats)


def _ci_err(values: pd.Series) -> np.ndarray | None:
    """Asymmetric error bar (2 x 1) of the bootstrap CI around the mean; None if undefined."""
    low, high = bootstrap_ci(values)
    if not np.isfinite(low):
        return None
    mean = float(values.mean())
    return np.array([[max(mean - low, 0.0)], [max(high - mean, 0.0)]])


def tradeoff_scatter(results: Results, scenario: str, metric: str, out: Path,
                     formats: list[str]) -> list[Path]:
    """Final mean value against forgetting, mean and 95% CI over seeds per strategy."""
    cells = summaries(results, metric)
    sc = cells[cells.scenario == scenario]
    strategies = list(dict.fromkeys(sc.strategy))
    pal = colours(strategies)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
        for s in strategies:
            g = sc[sc.strategy == s]
            x, y = g["forgetting"].astype(float), g[f"final:{metric}"].astype(float)
            ax.errorbar(x.mean(), y.mean(), xerr=_ci_err(x), yerr=_ci_err(y), fmt="o", ms=5,
                        color=pal[s], capsize=2, elinewidth=0.8, label=s)
            ax.annotate(s, (x.mean(), y.mean()), xytext=(4, 3), textcoords="offset points",
                        fontsize=FONT_SIZE - 1)
        ax.set_xlabel(f"forgetting ({metric_title(metric)}, lower is better)")
        ax.set_ylabel(f"final mean {metric_title(metric)}")
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
                    palette=colours(strategies), errorbar=bootstrap_ci, err_kws={"linewidth": 0.8},
                    capsize=0.1, ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel("final mean Recall@K")
        ax.set_ylim(0, 1)
        ax.set_title(f"{scenario}: final Recall@K over all tasks")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _save(fig, out, f"recall_bars_{scenario}", formats)
