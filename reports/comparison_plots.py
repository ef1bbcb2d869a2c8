"""Figures that compare strategies with each other, in the style of :mod:`reports.plots`
(same sizes, palette and colours per strategy):

* :func:`ablation_deltas`: each ablation variant minus the strategy it varies, a panel per
  column, 95% t CIs of the paired difference;
* :func:`critical_difference`: mean ranks on the primary column with the groups the
  Nemenyi test cannot tell apart (scikit-posthocs' diagram).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from reports.ablations import AblationTable
from reports.plots import (
    COLUMN_WIDTH,
    FONT_SIZE,
    REFERENCE_COLOUR,
    STYLE,
    _save,
    colours,
    text_colour,
)
from reports.tables import REFERENCE, Table, column_title, metric_title


def ablation_deltas(table: AblationTable, out: Path, formats: list[str]) -> list[Path]:
    """A panel per column of ``table``: each variant's mean difference from the strategy it
    varies (dot) with its 95% Student-t CI (bar), a line at 0; dark = Holm-significant,
    light = not shown to differ. For forgetting, right of 0 means the variant forgets
    more."""
    data = table.data
    variants = list(dict.fromkeys(data.variant))
    cols = table.columns
    names = [f"{v} (of {data[data.variant == v].parent.iloc[0]})" for v in variants]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(cols), sharey=True, squeeze=False, layout="constrained",
                                 figsize=(1.7 * len(cols) + 1.6, 0.28 * len(variants) + 1.1))
        for ax, (col, title) in zip(axes[0], cols, strict=True):
            for y, v in enumerate(variants):
                r = data[(data.variant == v) & (data.column == col)]
                if r.empty or not np.isfinite(r["delta"].iloc[0]):
                    continue
                r = r.iloc[0]
                colour = "#1f1f1f" if r["significant"] else "#9a9a9a"
                err = None
                if np.isfinite(r["ci_low"]):
                    err = np.array([[max(r["delta"] - r["ci_low"], 0.0)],
                                    [max(r["ci_high"] - r["delta"], 0.0)]])
                ax.errorbar(r["delta"], y, xerr=err, fmt="o", ms=4, color=colour,
                            capsize=2, elinewidth=0.9)
            ax.axvline(0, color="#c44e52", lw=0.8, ls="--")
            ax.set_title(f"Δ {title}", fontsize=FONT_SIZE)
            ax.grid(axis="x", alpha=0.3)
            ax.tick_params(axis="x", labelrotation=30)
        axes[0][0].set_yticks(range(len(variants)), names)
        axes[0][0].set_ylim(len(variants) - 0.5, -0.5)
        fig.suptitle(f"{table.scenario}: ablations (variant - parent; dark: Holm p < "
                     f"{table.alpha:g})", fontsize=FONT_SIZE + 1)
        return _save(fig, out, f"ablations_{table.scenario}_{table.metric}", formats)


def critical_difference(table: Table, out: Path, formats: list[str]) -> list[Path]:
    """The critical-difference diagram of ``table``'s primary column (Demšar 2006, drawn by
    scikit-posthocs): each strategy at its mean rank over the seeds (1 = best), a bar
    joining the strategies the Nemenyi test cannot tell apart at the table's alpha, the
    Friedman test in the title; the untrained reference in black, every other strategy in
    its colour of the other figures. Nothing when the tests are undefined."""
    import scikit_posthocs as sp

    ranks = table.ranks
    if ranks is None:
        return []
    n = len(ranks.mean_ranks)
    title = column_title(table.primary, metric_title(table.metric))
    # each strategy in its colour of the other figures (darkened to read as label text)
    pal = colours(list(dict.fromkeys(table.data.strategy)))
    palette = {s: matplotlib.colors.to_hex(text_colour(pal[s])) for s in ranks.mean_ranks.index
               if s in pal}
    if REFERENCE in palette:  # black, as its dashed line in the curves and the scatter
        palette[REFERENCE] = matplotlib.colors.to_hex(REFERENCE_COLOUR)

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(COLUMN_WIDTH * 1.6, 0.42 * n + 2.4),
                                        0.22 * n + 1.1))
        sp.critical_difference_diagram(
            ranks.mean_ranks, ranks.nemenyi, ax=ax, alpha=ranks.alpha,
            label_fmt_left="{label} ({rank:.2f})  ", label_fmt_right="  ({rank:.2f}) {label}",
            label_props={"fontsize": FONT_SIZE - 1},
            color_palette=palette if len(palette) == n else None,
            crossbar_props={"color": "black", "linewidth": 2.2})
        ax.set_title(f"{table.scenario}: mean rank on {title} over {ranks.blocks} seeds "
                     f"(1 = best)\nFriedman p = {ranks.friedman_p:.2g}; bars join strategies "
                     f"the Nemenyi test cannot tell apart (alpha {ranks.alpha:g})",
                     fontsize=FONT_SIZE)
        return _save(fig, out, f"critical_difference_{table.scenario}_{table.metric}", formats)
