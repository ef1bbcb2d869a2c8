"""The tables beside the comparison: each strategy's loss terms per experience, what its cells
cost, and cross-model (backfill-free) retrieval."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metrics.statistics import (  # noqa: F401 (re-exported)
    CI_SEED,
    N_RESAMPLES,
    bootstrap_ci,
    describe_ci,
    mean_ci,
    t_interval,
)
from reports.load import Results, summaries

if TYPE_CHECKING:
    from reports.tables import Table


def loss_table(results: Results, scenario: str) -> pd.DataFrame:
    """Each strategy's loss terms per experience, mean over seeds: rows (strategy, term),
    columns ``exp 0 .. exp T-1``. ``steps`` is the number of optimisation steps; ``metric``
    the metric loss; every other term is what the strategy adds (its regulariser's size,
    next to the metric loss); ``total`` is their sum. Empty for stores from before the
    terms were recorded."""
    rows: dict[tuple[str, str], list[list[float]]] = {}
    for (sc, strategy, _seed), terms in results.losses.items():
        if sc != scenario:
            continue
        for term, values in terms.items():
            per = rows.setdefault((strategy, term), [])
            for i, v in enumerate(values):
                while len(per) <= i:
                    per.append([])
                if v is not None and np.isfinite(v):
                    per[i].append(float(v))
    if not rows:
        return pd.DataFrame()
    order = list(dict.fromkeys(results.cells.strategy))
    rank = {"steps": 0, "metric": 1, "total": 3}
    keys = sorted(rows, key=lambda k: (order.index(k[0]) if k[0] in order else len(order),
                                       rank.get(k[1], 2), k[1]))
    t = max(len(v) for v in rows.values())
    data = [[float(np.mean(rows[k][i])) if i < len(rows[k]) and rows[k][i] else np.nan
             for i in range(t)] for k in keys]
    return pd.DataFrame(data, index=pd.MultiIndex.from_tuples(keys, names=["strategy", "term"]),
                        columns=[f"exp {i}" for i in range(t)])


def cost_table(results: Results, scenario: str, baseline: str | None = None) -> pd.DataFrame:
    """What each strategy's cells cost, from their ``result.json`` timings (``total_s``):
    rows strategy; columns ``cells`` (those that timed the whole stream), the median, min
    and max seconds of such a cell, the median relative to ``baseline``'s (``x
    <baseline>``; the first row's when ``baseline`` did not run here), and the median
    seconds per 100 optimisation steps over every timed cell (NaN without recorded steps).
    A cell's time is what its worker measured from building the cell to its last
    evaluation: training, the evaluation after each experience, and the per-seed parts of
    the caches; not the shared cache fill done before the workers start. A cell resumed
    from a checkpoint (its own, or a first experience shared with another cell) timed only
    the experiences after the resume: it counts in the seconds per 100 steps, over those
    experiences' steps, and not in the per-cell seconds (NaN for a strategy whose cells
    all resumed). A cell that loaded training loops run by a cell that trains alike (a
    drift compensation beside the strategy it wraps, or its other trials) counts their
    seconds as measured where they ran (``shared_training_s``), so its row is what
    running it alone would cost. Times depend on the machine and its load: compare the
    rows of one run. Empty when no cell recorded its time."""
    cells = results.cells
    if "train_s" not in cells:
        return pd.DataFrame()
    rows = cells[(cells.scenario == scenario) & cells.train_s.notna()]
    if rows.empty:
        return pd.DataFrame()
    resumed_after = rows.resumed_after if "resumed_after" in rows else pd.Series(0, rows.index)
    out: dict[str, list[float]] = {}
    for strategy, group in rows.groupby("strategy", sort=False):
        skip = resumed_after[group.index].fillna(0).astype(int).to_numpy()
        seconds = group.train_s.to_numpy(dtype=float)
        steps = [sum(v for v in (results.losses.get((scenario, strategy, int(seed)), {})
                                 .get("steps", []))[k:] if v)
                 for seed, k in zip(group.seed, skip, strict=True)]
        per100 = [100 * t / n for t, n in zip(seconds, steps, strict=True) if n]
        whole = seconds[skip == 0]
        out[str(strategy)] = [len(whole), *((float(np.median(whole)), float(whole.min()),
                                             float(whole.max())) if len(whole) else
                                            (np.nan,) * 3),
                              float(np.median(per100)) if per100 else np.nan]
    frame = pd.DataFrame.from_dict(out, orient="index", columns=[
        "cells", "median s", "min s", "max s", "s per 100 steps"])
    ref = baseline if baseline in frame.index else frame.index[0]
    frame.insert(4, f"x {ref}", frame["median s"] / frame.loc[ref, "median s"])
    frame.index.name = "strategy"
    return frame


def loss_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """:func:`loss_table` as text cells (header, rows): steps as integers, losses to 4
    significant digits, "–" where a term was not added in an experience."""
    head = ["strategy", "term", *table.columns]
    rows = [[str(strategy), str(term), *("–" if not np.isfinite(v) else (
        f"{v:.0f}" if term == "steps" else f"{v:.4g}") for v in row)]
        for (strategy, term), row in table.iterrows()]
    return head, rows


def loss_markdown(table: pd.DataFrame) -> str:
    """:func:`loss_table` as a Markdown table (empty text for an empty table)."""
    if table.empty:
        return ""
    head, rows = loss_cells(table)
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def cross_model_table(results: Results, scenario: str, metric: str) -> pd.DataFrame:
    """Backfill-free retrieval, when measured: per strategy (mean over seeds), ``metric`` of
    the final model's queries on the seen gallery embedded by the model after experience m
    (columns ``index of exp m``), beside ``rebuilt`` (the index re-embedded by the final
    model: the seen-gallery value). Empty when not measured or ``metric`` is not Recall@K."""
    per: dict[str, list[np.ndarray]] = {}
    rebuilt: dict[str, list[float]] = {}
    for key, by_metric in results.cross.items():
        if key[0] != scenario or metric not in by_metric:
            continue
        c = by_metric[metric]
        per.setdefault(key[1], []).append(c[-1, :-1])
        curve = results.seen.get(key, {}).get(metric)
        rebuilt.setdefault(key[1], []).append(float(curve[-1]) if curve is not None
                                              else np.nan)
    if not per:
        return pd.DataFrame()
    order = [s for s in dict.fromkeys(results.cells.strategy) if s in per]
    t = len(next(iter(per.values()))[0])
    data = {f"index of exp {m}": [float(np.mean([r[m] for r in per[s]])) for s in order]
            for m in range(t)}
    data["rebuilt"] = [float(np.mean(rebuilt[s])) for s in order]
    return pd.DataFrame(data, index=pd.Index(order, name="strategy"))


def cell_values(results: Results, tables: list[Table]) -> dict[str, str]:
    """Per scenario, the tidy per-cell CSV from which every number of its table, pairwise
    table, figures and claims is recomputed: one row per cell and quantity (each summary
    column of every metric; each point of the seen curve, ``train_exp``; each R-matrix
    entry, ``train_exp`` and ``eval_exp``), with the cell's config hash, commit and CPU."""
    out = {}
    for t in tables:
        rows = []
        sc = results.cells[results.cells.scenario == t.scenario]
        for metric in results.metrics:
            per = summaries(results, metric)
            per = per[per.scenario == t.scenario]
            for r in per.itertuples():
                key = (r.scenario, r.strategy, int(r.seed))
                common = {"scenario": r.scenario, "strategy": r.strategy, "seed": int(r.seed),
                          "metric": metric}
                tail = {"config_hash": r.config_hash,
                        "commit": results.commits.get(key, "unknown"),
                        "machine": results.machines.get(key, "unrecorded")}
                extra = [c for c in ("final_nri", "nri_cost") if np.isfinite(getattr(r, c))]
                for col in ("final_seen", "avg_incremental_seen", "final_mean", "forgetting",
                            "forgetting_ratio", "bwt", "avg_incremental", "last_task", *extra):
                    value = getattr(r, col) if col != "final_mean" else float(
                        results.matrices[key][metric][-1].mean())
                    rows.append({**common, "quantity": col, "train_exp": "",
                                 "eval_exp": "", "value": value, **tail})
                curve = results.seen.get(key, {}).get(metric)
                for i, v in enumerate([] if curve is None else curve):
                    rows.append({**common, "quantity": "seen", "train_exp": i, "eval_exp": "",
                                 "value": float(v), **tail})
                mat = results.matrices[key][metric]
                for i in range(mat.shape[0]):
                    for j in range(mat.shape[1]):
                        rows.append({**common, "quantity": "r", "train_exp": i, "eval_exp": j,
                                     "value": float(mat[i, j]), **tail})
        if not sc.empty:
            out[t.scenario] = pd.DataFrame(rows).to_csv(index=False, float_format="%.17g",
                                                        lineterminator="\n")
    return out
