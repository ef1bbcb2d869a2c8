"""What a tracker logs of a cell, the same for MLflow and W&B: its resolved config as flat
parameters and every metric per experience as a step series, read from its result.json."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for key, value in sorted(obj.items()):
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        text = json.dumps(obj) if isinstance(obj, list | tuple) else str(obj)
        yield prefix[:-1], text[:6000]


def cell_params(result: dict[str, Any]) -> dict[str, str]:
    """A cell's resolved config as MLflow parameters (dotted keys, text values)."""
    config = {k: v for k, v in result["config"].items()
              if k not in ("id", "hash", "data_root", "cache_dir")}
    params = dict(_flatten(config))
    params["config_hash"] = result["config_hash"]
    params["id"] = result["id"]
    return params


def _name(metric: str, k: str) -> str:
    return f"{metric}_at_{k}" if k else metric


def _series(table: Any) -> Iterator[tuple[str, Any]]:
    """``(K or "", values)`` of a ``{K: values}`` mapping or one list (mAP@R)."""
    if isinstance(table, dict):
        yield from table.items()
    else:
        yield "", table


def cell_metrics(result: dict[str, Any]) -> list[tuple[str, float, int]]:
    """Every metric of a finished cell as ``(name, value, step)``: the values of its
    ``result.json``, the step being the experience after which they were measured."""
    payload = result["payload"]
    out: list[tuple[str, float, int]] = []

    def add(name: str, value: Any, step: int) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            out.append((name, float(value), step))

    for metric, table in payload["seen"].items():
        for k, curve in _series(table):
            for i, v in enumerate(curve):
                add(f"seen.{_name(metric, k)}", v, i)
    for metric, table in payload["r_matrix"].items():
        for k, mat in _series(table):
            for i, row in enumerate(mat):
                for j, v in enumerate(row):
                    add(f"task{j}.{_name(metric, k)}", v, i)
    for term, values in payload.get("losses", {}).items():
        for i, v in enumerate(values):
            add("steps" if term == "steps" else f"loss.{term}", v, i)
    last = max(payload.get("num_experiences", 1) - 1, 0)
    for key, v in payload.get("summary", {}).items():
        if isinstance(v, list):  # one value per task (final row, per-task forgetting)
            for j, x in enumerate(v):
                add(f"summary.{key}.task{j}", x, last)
        else:
            add(f"summary.{key}", v, last)
    return out
