"""Read results stores (``lrbench run``'s output) into tidy pandas tables.

Reports read only the store: each ``cells/*/result.json`` and ``matrix.yaml``, never
training code. Several stores merge into one set of results; a cell present in two of them
must be the same run (same config hash), otherwise it is an error.

Metric names: ``recall@K`` (one per K the matrix evaluated) and ``map_at_r``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.errors import LrbenchError
from metrics.forgetting import forgetting

#: per-cell summary columns derived from the chosen metric's R matrix
SUMMARY_COLUMNS = ("final_mean", "forgetting", "forgetting_ratio", "bwt", "avg_incremental",
                   "last_task")


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


def _matrices(payload: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for metric, by_k in payload["r_matrix"].items():
        if isinstance(by_k, dict):
            for k, mat in by_k.items():
                out[f"{metric}@{k}"] = np.array(mat, dtype=float)
        else:
            out[metric] = np.array(by_k, dtype=float)
    return out


def load_results(stores: list[str | Path]) -> Results:
    """Load and merge results stores; a missing or empty store is a one-line error."""
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    matrices: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    seen: dict[tuple[str, str, int], tuple[str, Path]] = {}
    configs: dict[str, str] = {}
    versions: dict[str, str] = {}
    skipped: dict[str, set[str]] = {}
    paths = [Path(s) for s in stores]
    for store in paths:
        results = sorted((store / "cells").glob("*/result.json"))
        if not store.is_dir() or not results:
            raise LrbenchError(f"{str(store)!r} is not a results store (no cells/*/result.json); "
                               "give the --out folder of an lrbench run")
        if (store / "matrix.yaml").is_file():
            configs[str(store)] = (store / "matrix.yaml").read_text()
        for path in results:
            try:
                result = json.loads(path.read_text())
                cfg = result["config"]
                key = (cfg["scenario"]["name"], cfg["strategy"], int(cfg["seed"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise LrbenchError(f"{path}: unreadable result ({exc}); rerun that cell with "
                                   "lrbench run --resume") from None
            if key in seen:
                if seen[key][0] != result.get("config_hash"):
                    raise LrbenchError(
                        f"cell {path.parent.name} is in {str(seen[key][1])!r} and "
                        f"{str(store)!r} with different configs; report those stores separately")
                continue
            seen[key] = (result.get("config_hash"), store)
            base = {"scenario": key[0], "strategy": key[1], "seed": key[2],
                    "store": str(store), "cell": path.parent.name}
            if result.get("status") != "finished":
                failed.append({**base, "status": result.get("status", "unknown"),
                               "reason": result.get("reason", "")})
                continue
            versions = versions or dict(result.get("versions", {}))
            for name, files in (cfg.get("skip_files") or {}).items():
                skipped.setdefault(name, set()).update(files)
            mats = _matrices(result["payload"])
            matrices[key] = mats
            row = {**base, "num_experiences": result["payload"]["num_experiences"],
                   "train_s": result["payload"].get("timings", {}).get("total_s")}
            for metric, mat in mats.items():
                row[f"final:{metric}"] = float(mat[-1].mean())
            rows.append(row)
    cells = pd.DataFrame(rows)
    if len(cells):  # rows in the order the matrix files list scenarios and strategies
        rank = _matrix_order(configs.values())
        cells = cells.assign(
            _sc=[rank["scenarios"].get(v, len(rank["scenarios"])) for v in cells.scenario],
            _st=[rank["strategies"].get(v, len(rank["strategies"])) for v in cells.strategy],
        ).sort_values(["_sc", "scenario", "_st", "strategy", "seed"], kind="stable",
                      ignore_index=True).drop(columns=["_sc", "_st"])
    return Results(cells, matrices, pd.DataFrame(
        failed, columns=["scenario", "strategy", "seed", "store", "cell", "status", "reason"]),
        paths, configs, versions, {k: sorted(v) for k, v in sorted(skipped.items())})


def _matrix_order(texts: Any) -> dict[str, dict[str, int]]:
    """Position of each scenario and strategy name in the stores' matrix files."""
    import yaml

    order: dict[str, dict[str, int]] = {"scenarios": {}, "strategies": {}}
    for text in texts:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            continue
        for sc in data.get("scenarios") or []:
            name = sc.get("name") if isinstance(sc, dict) else sc
            order["scenarios"].setdefault(str(name), len(order["scenarios"]))
        for st in data.get("strategies") or {}:
            order["strategies"].setdefault(str(st), len(order["strategies"]))
    return order


def summaries(results: Results, metric: str = "recall@1") -> pd.DataFrame:
    """Per finished cell: final mean of every metric, and forgetting, forgetting ratio, BWT
    and average incremental value of ``metric`` (``metrics.forgetting`` on its R matrix),
    and ``last_task``: its value on the last task after training it (``R[T-1][T-1]``, how
    well the final experience was learnt: plasticity)."""
    if metric not in results.metrics:
        raise LrbenchError(f"metric {metric!r} is not in these results; use one of "
                           f"{', '.join(results.metrics) or '(none)'}")
    out = results.cells.copy()
    for col in SUMMARY_COLUMNS[1:-1]:
        out[col] = [forgetting(results.matrices[(r.scenario, r.strategy, r.seed)][metric])[col]
                    if r.num_experiences > 1 else np.nan for r in out.itertuples()]
    out["last_task"] = [float(results.matrices[(r.scenario, r.strategy, r.seed)][metric][-1, -1])
                        for r in out.itertuples()]
    return out
