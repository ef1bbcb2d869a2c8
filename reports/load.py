"""Read results stores (``lrbench run``'s output) into tidy pandas tables.

Reports read only the store: each ``cells/*/result.json`` and ``matrix.yaml``, never
training code. Several stores merge into one set of results; a cell present in two of them
must be the same run (same config hash), and the cells of one scenario must share every
setting but strategy, strategy hyperparameters and seed (:func:`load_results`), otherwise
it is an error.

Only the cells of each store's own ``matrix.yaml`` are read: others (left by ``lrbench run
--resume`` with a changed matrix) are listed in ``Results.stale`` and left out. A damaged
``result.json`` is a one-line error naming it and the command that recomputes it.

Forgetting, ratio and BWT are recomputed here from each cell's R matrix, never read from
the ``summary`` the runner writes: with one experience they are NaN (undefined), not 0.

Metric names: ``recall@K`` (one per K the matrix evaluated) and ``map_at_r``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.run.store import (
    current_cells,
    machine_label,
    parse_yaml,
    read_result,
    read_store_text,
)
from metrics.errors import LrbenchError
from metrics.forgetting import forgetting
from reports.compatibility_columns import add_summary_columns
from reports.settings import (  # noqa: F401 (re-exported: reports.load.*)
    CELL_KEYS,
    STRATEGY_KEYS,
    _differing,
    _overrides,
    settings,
)

#: per-cell summary columns derived from the chosen metric's seen curve and R matrix
SUMMARY_COLUMNS = ("final_seen", "avg_incremental_seen", "final_mean", "forgetting",
                   "forgetting_ratio", "bwt", "avg_incremental", "last_task",
                   # the never-re-indexed gallery and compatibility (reports.compatibility)
                   "final_nri", "nri_cost", "nfr", "ac", "am", "bc", "fc", "cross_test_gain",
                   "backfill_gain", "update_gain")
#: undefined (NaN, shown as "–") for a cell with a single experience: nothing to forget
UNDEFINED_WITH_ONE = ("forgetting", "forgetting_ratio", "bwt")


@dataclass
class Results:
    """What the stores hold: one row per cell (``cells``), the R matrices, the failures."""

    cells: pd.DataFrame
    matrices: dict[tuple[str, str, int], dict[str, np.ndarray]]
    failed: pd.DataFrame
    stores: list[Path]
    configs: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: dataset -> images ``lrbench run --skip-corrupt`` left out of some finished cell
    skipped: dict[str, list[str]] = field(default_factory=dict)
    #: per cell: metric -> value on the union of seen experiences' test sets after each
    #: experience (the "seen" gallery); absent for stores written before it was recorded
    seen: dict[tuple[str, str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    #: per cell: ``steps`` and each loss term's mean per experience (None: not added)
    losses: dict[tuple[str, str, int], dict[str, list[float | None]]] = field(
        default_factory=dict)
    #: per cell: the warnings its run recorded (an inactive regulariser, ...)
    warnings: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)
    #: per cell: the lrbench commit that computed it
    commits: dict[tuple[str, str, int], str] = field(default_factory=dict)
    #: cell folders of each store that are not cells of its matrix (left by ``lrbench run
    #: --resume`` with a changed matrix): kept on disk, left out of every table
    stale: list[Path] = field(default_factory=list)
    #: per cell (when ``evaluation.cross_model`` was measured): ``recall@K`` -> C, where
    #: C[i][m] is model i's queries against the seen gallery embedded by model m (m < i)
    cross: dict[tuple[str, str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    #: the pretrained weights the finished cells loaded (``pretrained: true``): name ->
    #: (file, SHA-256 of the file) as each cell's ``result.json`` records them
    weights: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: per cell (stores written since it was measured): the ``never_reindexed`` and
    #: ``compatibility`` sections of its payload (:mod:`reports.compatibility`)
    gallery: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    #: per cell: the CPU that computed it and the instruction set torch used there
    #: (:func:`machine_label`), "unrecorded" for stores written before it was recorded
    machines: dict[tuple[str, str, int], str] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        """Metric names with R matrices in every finished cell, recall@K by K first."""
        names = set.intersection(*(set(m) for m in self.matrices.values())) \
            if self.matrices else set()
        recalls = sorted((n for n in names if n.startswith("recall@")),
                         key=lambda n: int(n.split("@")[1]))
        return recalls + sorted(n for n in names if not n.startswith("recall@"))

    @property
    def scenarios(self) -> list[str]:
        """Scenario names in the order they first appear."""
        return list(dict.fromkeys(self.cells["scenario"])) if len(self.cells) else []

    def without(self, rows: set[tuple[str, str]]) -> Results:
        """These results less the cells of the (scenario, strategy) pairs in ``rows`` (the
        ablation variants, kept out of the comparison tables and figures)."""
        if not rows:
            return self

        def keep(key: tuple[str, str, int]) -> bool:
            return (key[0], key[1]) not in rows

        cells = self.cells[[(sc, st) not in rows for sc, st in
                            zip(self.cells.scenario, self.cells.strategy, strict=True)]]
        return replace(self, cells=cells.reset_index(drop=True),
                       matrices={k: v for k, v in self.matrices.items() if keep(k)},
                       seen={k: v for k, v in self.seen.items() if keep(k)},
                       losses={k: v for k, v in self.losses.items() if keep(k)},
                       warnings={k: v for k, v in self.warnings.items() if keep(k)},
                       commits={k: v for k, v in self.commits.items() if keep(k)},
                       cross={k: v for k, v in self.cross.items() if keep(k)},
                       gallery={k: v for k, v in self.gallery.items() if keep(k)},
                       machines={k: v for k, v in self.machines.items() if keep(k)})


def _curves(payload: dict[str, Any]) -> dict[str, np.ndarray]:
    """The seen-gallery curves of a payload, by metric name (``recall@K``, ``map_at_r``)."""
    out = {}
    for metric, by_k in (payload.get("seen") or {}).items():
        if isinstance(by_k, dict):
            for k, curve in by_k.items():
                out[f"{metric}@{k}"] = np.array(curve, dtype=float)
        else:
            out[metric] = np.array(by_k, dtype=float)
    return out


def _matrices(payload: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for metric, by_k in payload["r_matrix"].items():
        if isinstance(by_k, dict):
            for k, mat in by_k.items():
                out[f"{metric}@{k}"] = np.array(mat, dtype=float)
        else:
            out[metric] = np.array(by_k, dtype=float)
    return out


def _measured(result: dict[str, Any]) -> Any:
    """What a finished copy of a cell says it measured: every number a report reads (R
    matrices, seen curves, cross-model matrices)."""
    payload = result.get("payload") or {}
    return (payload.get("r_matrix"), payload.get("seen"), payload.get("cross_model"))


def _one_copy_each(loaded: list[tuple[dict[str, Any], Path, Path, dict[str, str]]]
                   ) -> list[tuple[dict[str, Any], Path, Path, dict[str, str]]]:
    """One copy of each cell (same scenario, strategy, seed and config hash) found in
    several merged stores, chosen whatever the order of the stores: a finished copy over a
    failed one; finished copies that measured different numbers are a one-line error
    naming both files (which one counts must not depend on the order of the stores)."""
    chosen: dict[tuple[Any, ...], int] = {}
    out: list[tuple[dict[str, Any], Path, Path, dict[str, str]]] = []
    for entry in loaded:
        result, _, path, _ = entry
        cfg = result["config"]
        key = (cfg["scenario"]["name"], cfg["strategy"], int(cfg["seed"]),
               result.get("config_hash"))
        if key not in chosen:
            chosen[key] = len(out)
            out.append(entry)
            continue
        first = out[chosen[key]]
        done = [e[0].get("status") == "finished" for e in (first, entry)]
        if all(done) and _measured(first[0]) != _measured(result):
            raise LrbenchError(
                f"cell {path.parent.name} has two copies with one config hash but different "
                f"results: {first[2]} and {path}; which one counts must not depend on the "
                "order of the stores: remove the wrong one (or report the stores "
                "separately)")
        if done[1] and not done[0]:  # a finished copy replaces a failed one
            out[chosen[key]] = entry
    return out


def _split_label(scenario: str, flat: dict[str, str], split_by: list[str]) -> str:
    parts = [f"{k}={json.loads(flat[k]) if k in flat else '-'}" for k in split_by]
    return f"{scenario} [{', '.join(parts)}]" if parts else scenario


def load_results(stores: list[str | Path], split_by: list[str] | None = None) -> Results:
    """Load and merge results stores; a missing or empty store is a one-line error.

    The finished cells of one scenario must agree on every setting (model, training budget,
    scenario definition, evaluation, ...) but their strategy, its hyperparameters and
    training overrides, and the seed; otherwise merging would average unlike runs, and it is
    a one-line error naming the setting. ``split_by`` (dotted settings, e.g.
    ``["training.iterations"]``) instead reports each value as its own scenario, named
    ``"<scenario> [training.iterations=100]"``, where the cells of a scenario differ in it.
    """
    split_by = list(split_by or [])
    loaded: list[tuple[dict[str, Any], Path, Path, dict[str, str]]] = []
    configs: dict[str, str] = {}
    paths = [Path(s) for s in stores]
    stale: list[Path] = []
    for store in paths:
        results = sorted((store / "cells").glob("*/result.json"))
        if not store.is_dir() or not results:
            raise LrbenchError(f"{str(store)!r} is not a results store (no cells/*/result.json); "
                               "give the --out folder of an lrbench run")
        text = read_store_text(store / "matrix.yaml")  # a regular file, or one line
        if text is not None:
            parse_yaml(text, str(store / "matrix.yaml"))  # the YAML reader's bounds hold
            configs[str(store)] = text
        overrides = _overrides(configs.get(str(store)))
        current = current_cells(store)
        for path in results:
            if current is not None and path.parent.name not in current:
                stale.append(path.parent)
                continue
            try:
                result = read_result(path)  # a damaged file: DamagedResult, one line
            except OSError as exc:
                raise LrbenchError(f"{path}: cannot be read ({exc.strerror}); fix its "
                                   "permissions or delete its cell folder") from None
            if result is None:  # removed since the listing
                continue
            want = current.get(path.parent.name) if current is not None else None
            if want is not None and result.get("config_hash") != want:
                stale.append(path.parent)  # this id's cell has another config now
                continue
            cfg = result["config"]
            loaded.append((result, store, path, settings(cfg, overrides.get(cfg["strategy"]))))
    loaded = _one_copy_each(loaded)
    known = {n for *_, flat in loaded for n in flat}
    unknown = [k for k in split_by if k not in known]
    if unknown:
        raise LrbenchError(f"cannot split by {', '.join(unknown)}: not a setting of these "
                           f"cells; use dotted names such as training.iterations or model.dim")
    values: dict[str, set[tuple[str | None, ...]]] = {}  # scenario -> split values seen
    for result, *_, flat in loaded:
        values.setdefault(result["config"]["scenario"]["name"], set()).add(
            tuple(flat.get(k) for k in split_by))
    splitting = {sc for sc, v in values.items() if len(v) > 1}
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    matrices: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    seen: dict[tuple[str, str, int], tuple[str, Path, dict[str, str]]] = {}
    groups: dict[str, list[tuple[dict[str, str], Path]]] = {}
    by_strategy: dict[tuple[str, str], list[tuple[dict[str, str], Path]]] = {}
    versions: dict[str, str] = {}
    skipped: dict[str, set[str]] = {}
    finished: list[str] = []  # the scenario of each row
    seen_curves: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    losses: dict[tuple[str, str, int], dict[str, list[float | None]]] = {}
    warnings: dict[tuple[str, str, int], list[str]] = {}
    commits: dict[tuple[str, str, int], str] = {}
    machines: dict[tuple[str, str, int], str] = {}
    cross: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    weights: dict[str, tuple[str, str]] = {}
    gallery: dict[tuple[str, str, int], dict[str, Any]] = {}
    for result, store, path, flat in loaded:
        cfg = result["config"]
        scenario = cfg["scenario"]["name"]
        label = _split_label(scenario, flat, split_by) if scenario in splitting else scenario
        key = (label, cfg["strategy"], int(cfg["seed"]))
        cell = path.parent
        if key in seen:
            if seen[key][0] != result.get("config_hash"):
                diff = _differing([(seen[key][2], seen[key][1]), (flat, store)], shared=False)
                what = (f" ({diff[0]}: {diff[1][0][0]} vs {diff[1][1][0]})" if diff else "")
                raise LrbenchError(
                    f"cell {cell.name} is in {str(seen[key][1])!r} and {str(store)!r} with "
                    f"different configs{what}; report those stores separately")
            continue
        seen[key] = (result.get("config_hash"), store, flat)
        base = {"scenario": key[0], "strategy": key[1], "seed": key[2],
                "store": str(store), "cell": cell.name,
                "config_hash": str(result.get("config_hash") or "")}
        if result.get("status") != "finished":
            failed.append({**base, "plugin": str(cfg.get("plugin") or key[1]),
                           "status": result.get("status", "unknown"),
                           "reason": result.get("reason", "")})
            continue
        finished.append(scenario)
        groups.setdefault(label, []).append((flat, store))
        by_strategy.setdefault((label, key[1]), []).append((flat, store))
        versions = versions or dict(result.get("versions", {}))
        for name, files in (cfg.get("skip_files") or {}).items():
            skipped.setdefault(name, set()).update(files)
        mats = _matrices(result["payload"])
        matrices[key] = mats
        seen_curves[key] = _curves(result["payload"])
        losses[key] = dict(result["payload"].get("losses") or {})
        warnings[key] = list(result["payload"].get("warnings") or [])
        commits[key] = str((result.get("versions") or {}).get("lrbench_commit", "unknown"))
        machines[key] = machine_label(result.get("host"))
        loaded_weights = result["payload"].get("weights")
        if isinstance(loaded_weights, dict) and loaded_weights.get("name"):
            weights[str(loaded_weights["name"])] = (str(loaded_weights.get("file", "")),
                                                    str(loaded_weights.get("sha256", "")))
        stored = {s: result["payload"][s] for s in ("never_reindexed", "compatibility")
                  if result["payload"].get(s)}
        if stored:  # absent from stores written before they were measured
            gallery[key] = stored
        if result["payload"].get("cross_model"):
            cross[key] = {f"recall@{k}": np.array(m, dtype=float)
                          for k, m in result["payload"]["cross_model"].items()}
        row = {**base, "plugin": str(cfg.get("plugin") or key[1]),
               "num_experiences": result["payload"]["num_experiences"],
               "train_s": _cell_seconds(result["payload"].get("timings", {})),
               # experiences a resumed cell did not train itself (not in train_s)
               "resumed_after": int(result["payload"].get("timings", {})
                                    .get("resumed_after") or 0)}
        for metric, mat in mats.items():
            row[f"final:{metric}"] = float(mat[-1].mean())
        rows.append(row)
    _refuse_unlike(groups, by_strategy, split_by)
    cells = pd.DataFrame(rows)
    if len(cells):  # rows in the order the matrix files list scenarios and strategies
        rank = _matrix_order(configs.values())
        name = {row["scenario"]: sc for row, sc in zip(rows, finished, strict=True)}
        split = {label: i for i, label in enumerate(dict.fromkeys(cells.scenario))}
        cells = cells.assign(
            _sc=[rank["scenarios"].get(name[v], len(rank["scenarios"])) for v in cells.scenario],
            _name=[name[v] for v in cells.scenario],
            _split=[split[v] for v in cells.scenario],  # split tables as the stores list them
            _st=[rank["strategies"].get(v, len(rank["strategies"])) for v in cells.strategy],
        ).sort_values(["_sc", "_name", "_split", "_st", "strategy", "seed"], kind="stable",
                      ignore_index=True).drop(columns=["_sc", "_name", "_split", "_st"])
    return Results(cells, matrices, pd.DataFrame(
        failed, columns=["scenario", "strategy", "seed", "store", "cell", "config_hash",
                         "plugin", "status", "reason"]),
        paths, configs, versions, {k: sorted(v) for k, v in sorted(skipped.items())},
        seen_curves, losses, warnings, commits, stale, cross, weights, gallery, machines)


def _refuse_unlike(groups: dict[str, list[tuple[dict[str, str], Path]]],
                   by_strategy: dict[tuple[str, str], list[tuple[dict[str, str], Path]]],
                   split_by: list[str]) -> None:
    """A one-line error for the first table whose cells differ in a shared setting, or
    for a strategy whose seeds ran with different settings of its own."""
    for label, cells in groups.items():
        diff = _differing(cells, shared=True)
        if diff:
            name, values = diff
            shown = ", ".join(f"{v} in {str(s)!r}" for v, s in values[:3])
            raise LrbenchError(
                f"cannot merge the cells of scenario {label!r}: they differ in {name} "
                f"({shown}); report those stores separately, or split them into one table "
                f"per value with --split-by {','.join([*split_by, name])}")
    for (label, strategy), cells in by_strategy.items():
        diff = _differing(cells, shared=False)
        if diff:
            name, values = diff
            shown = ", ".join(f"{v} in {str(s)!r}" for v, s in values[:3])
            raise LrbenchError(
                f"cannot merge the seeds of {strategy!r} in scenario {label!r}: they differ "
                f"in {name} ({shown}); give one of them another strategy name in its "
                f"matrix file, or split them with --split-by {','.join([*split_by, name])}")


def _matrix_order(texts: Any) -> dict[str, dict[str, int]]:
    """Position of each scenario and strategy name in the stores' matrix files."""
    order: dict[str, dict[str, int]] = {"scenarios": {}, "strategies": {}}
    for text in texts:
        try:
            data = parse_yaml(text, "matrix.yaml") or {}
        except LrbenchError:
            continue
        if not isinstance(data, dict):
            continue
        for sc in data.get("scenarios") or []:
            name = sc.get("name") if isinstance(sc, dict) else sc
            order["scenarios"].setdefault(str(name), len(order["scenarios"]))
        for st in data.get("strategies") or {}:
            order["strategies"].setdefault(str(st), len(order["strategies"]))
    return order


def summaries(results: Results, metric: str = "recall@1") -> pd.DataFrame:
    """Per finished cell: ``final_seen`` and ``avg_incremental_seen``, ``metric`` on the
    gallery of every class seen so far after the last experience and its mean over the
    stream (Rebuffi et al.'s average incremental value; NaN for a store written before the
    seen curves were recorded), final mean of every metric, and forgetting, forgetting ratio, BWT
    (NaN with one experience) and the mean of per-task values over the stream
    (``avg_incremental``: ``mean_i mean_{j<=i} R[i][j]``, not Rebuffi's average incremental
    Recall@K, see ``docs/metrics.md``) of ``metric``, all recomputed from its R matrix by
    ``metrics.forgetting``, and ``last_task``: its value on the last task after training
    it (``R[T-1][T-1]``, how well the final experience was learnt: plasticity)."""
    if metric not in results.metrics:
        raise LrbenchError(f"metric {metric!r} is not in these results; use one of "
                           f"{', '.join(results.metrics) or '(none)'}")
    out = results.cells.copy()
    summary = [forgetting(results.matrices[(r.scenario, r.strategy, r.seed)][metric])
               for r in out.itertuples()]
    for col in UNDEFINED_WITH_ONE:
        out[col] = [s[col] if r.num_experiences > 1 else np.nan
                    for s, r in zip(summary, out.itertuples(), strict=True)]
    out["avg_incremental"] = [s["avg_incremental"] for s in summary]
    curves = [results.seen.get((r.scenario, r.strategy, r.seed), {}).get(metric)
              for r in out.itertuples()]
    out["final_seen"] = [float(c[-1]) if c is not None and len(c) else np.nan for c in curves]
    out["avg_incremental_seen"] = [float(np.mean(c)) if c is not None and len(c) else np.nan
                                   for c in curves]
    out["last_task"] = [float(results.matrices[(r.scenario, r.strategy, r.seed)][metric][-1, -1])
                        for r in out.itertuples()]
    return add_summary_columns(out, results, metric)  # NaN for stores without them


def _cell_seconds(timings: dict[str, Any]) -> float | None:
    """What a cell cost: the seconds its worker measured (``total_s``), plus those of the
    training loops it loaded from a cell that trains alike, as measured where they ran
    (``shared_training_s``: a drift compensation costs its wrapped strategy's training
    too, though it ran it once for several cells). None when it was not timed (or its
    time is not a finite number of seconds: a hand-edited file is left out, not fatal)."""
    def seconds(value: Any) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok and np.isfinite(value) and value >= 0 else None

    total = seconds(timings.get("total_s"))
    if total is None:
        return None
    return total + (seconds(timings.get("shared_training_s")) or 0.0)
