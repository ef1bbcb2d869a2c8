"""Retrieval metrics: Recall@K / mAP@R engine, R matrices, forgetting, Avalanche plugins."""

from metrics.forgetting import forgetting
from metrics.retrieval import (
    DEFAULT_KS,
    RetrievalResult,
    evaluate_query_gallery,
    evaluate_retrieval,
    knn_leave_one_out,
    knn_query_gallery,
    map_at_r,
    recall_at_k,
)

__all__ = [
    "DEFAULT_KS", "RetrievalResult", "evaluate_query_gallery", "evaluate_retrieval",
    "RetrievalMetrics", "forgetting", "knn_leave_one_out", "knn_query_gallery", "map_at_r",
    "recall_at_k",
]


def __getattr__(name: str):
    # The Avalanche plugin is imported on first use: importing Avalanche takes seconds,
    # and the engine alone does not need it.
    if name == "RetrievalMetrics":
        from metrics.plugins import RetrievalMetrics

        return RetrievalMetrics
    raise AttributeError(f"module 'metrics' has no attribute {name!r}")
