"""Retrieval metrics: Recall@K / mAP@R engine, R matrices, forgetting, Avalanche plugins.

The torch-backed names (the engine, the Avalanche plugin) are imported on first use:
importing torch and Avalanche takes seconds, and ``metrics.errors`` (the project's user
error, imported by every command line start) and ``forgetting`` need neither.
``forgetting`` is imported here eagerly: the name is also a submodule's, and a lazy one
would be shadowed by that submodule once anything imports ``metrics.forgetting``.
"""

from __future__ import annotations

import importlib
from typing import Any

from metrics.forgetting import forgetting

#: public name -> the submodule defining it (imported on first access)
_LAZY = {
    "DEFAULT_KS": "retrieval", "RetrievalResult": "retrieval",
    "evaluate_query_gallery": "retrieval", "evaluate_retrieval": "retrieval",
    "knn_leave_one_out": "retrieval", "knn_query_gallery": "retrieval",
    "map_at_r": "retrieval", "recall_at_k": "retrieval", "RetrievalMetrics": "plugins",
}

__all__ = [
    "DEFAULT_KS", "RetrievalResult", "evaluate_query_gallery", "evaluate_retrieval",
    "RetrievalMetrics", "forgetting", "knn_leave_one_out", "knn_query_gallery", "map_at_r",
    "recall_at_k",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"metrics.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if name in ("retrieval", "plugins", "errors"):  # ``import metrics; metrics.retrieval``
        return importlib.import_module(f"metrics.{name}")
    raise AttributeError(f"module 'metrics' has no attribute {name!r}")
