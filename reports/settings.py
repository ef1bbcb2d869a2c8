"""The settings a report's cells share or differ in: stores merge only when their cells differ in
strategy, hyperparameters and seed alone, unless the report splits by the settings that differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.run.store import parse_yaml
from metrics.errors import LrbenchError

#: config keys that name a cell or may differ between the cells of one table: where the
#: data and caches are and what runs the cell do not change what is measured, and
#: ``skip_files`` (images left out as undecodable) is listed on the report page
CELL_KEYS = ("id", "hash", "strategy", "seed", "data_root", "cache_dir", "skip_files",
             "training.device", "training.eval_mb_size")

#: settings of a strategy: may differ between strategies of one table, not between seeds
STRATEGY_KEYS = ("hparams", "plugin")


def settings(config: dict[str, Any], overrides: dict[str, Any] | None = None
             ) -> dict[str, str]:
    """A cell config as flat ``dotted.key -> JSON value`` settings, without :data:`CELL_KEYS`.

    ``overrides`` are the strategy's own ``training:`` overrides in its matrix file: those
    training keys become strategy settings (``strategy.training.<key>``).
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = json.dumps(value, sort_keys=True, default=str)

    walk("", config)
    for key in CELL_KEYS:
        flat.pop(key, None)
    for key in overrides or {}:
        for name in [n for n in flat if n == f"training.{key}"
                     or n.startswith(f"training.{key}.")]:
            flat[f"strategy.{name}"] = flat.pop(name)
    return flat


def _overrides(matrix_text: str | None) -> dict[str, dict[str, Any]]:
    """strategy name -> its ``training:`` overrides in a store's matrix file."""
    try:
        data = parse_yaml(matrix_text or "", "matrix.yaml") or {}
    except LrbenchError:
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for name, params in (data.get("strategies") or {}).items():
        if isinstance(params, dict) and isinstance(params.get("training"), dict):
            out[str(name)] = params["training"]
    return out


def _differing(cells: list[tuple[dict[str, str], Path]], shared: bool
               ) -> tuple[str, list[tuple[str, Path]]] | None:
    """The first setting on which ``cells`` disagree, with one (value, store) per value.

    ``shared``: only settings every strategy must share (not :data:`STRATEGY_KEYS` nor the
    ``strategy.`` ones). A setting missing in some cells (written by an older version) is
    compared among the cells that have it.
    """
    names = dict.fromkeys(n for flat, _ in cells for n in flat)
    for name in names:
        if shared and (name.startswith("strategy.")
                       or name.split(".")[0] in STRATEGY_KEYS):
            continue
        seen: dict[str, Path] = {}
        for flat, store in cells:
            if name in flat:
                seen.setdefault(flat[name], store)
        if len(seen) > 1:
            return name, list(seen.items())
    return None
