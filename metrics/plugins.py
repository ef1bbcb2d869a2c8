"""Avalanche metric plugin for retrieval: Recall@K / mAP@R per experience, R matrices.

Use it like any Avalanche metric::

    metric = RetrievalMetrics(ks=(1, 2, 4, 8))
    strategy = Naive(model, optimizer, criterion,
                     evaluator=EvaluationPlugin(metric, loggers=[...]))
    ...  # train on each experience, eval on the whole test stream
    metric.r_matrix(k=1)        # T x T numpy array, R[i][j]
    metric.seen_curve(k=1)      # Recall@1 on the union of seen experiences, per step

During evaluation it collects the model's outputs (the embeddings) and labels of every
mini-batch; embeddings are computed once per model and test set and reused by every metric:
per-experience Recall@K and mAP@R, the union of seen experiences (the number to lead with:
it exposes drift between old and new features that per-task galleries hide), and optionally
the cross-model (backfill-free) Recall@K of the new model's queries against galleries
embedded by each earlier model.

A strategy plugin may transform the QUERY side only: a plugin of the evaluated strategy
with a callable ``query_transform(embeddings) -> embeddings`` (the statistics-only
baselines: a metric learnt from accumulated feature statistics) has every query embedded
as usual and then transformed, while the gallery keeps the plain embeddings, the vectors
an index would store. Each test image is then a transformed query against every other
image's plain embedding (the query itself removed by index, as without a transform), and
the ranking is by cosine similarity between the two. Without such a plugin nothing
changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue

from metrics.gallery import StoredGallery
from metrics.retrieval import (
    DEFAULT_KS,
    RetrievalResult,
    evaluate_query_gallery,
    evaluate_retrieval,
)


def query_transform(strategy: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The composed ``query_transform`` of the strategy's plugins that have one (in plugin
    order), or None when none has (see the module docstring)."""
    found = [fn for p in getattr(strategy, "plugins", ()) or ()
             if callable(fn := getattr(p, "query_transform", None))]
    if not found:
        return None

    def transform(x: torch.Tensor) -> torch.Tensor:
        for fn in found:
            x = fn(x)
        return x

    return transform


def default_embedding(output: Any) -> torch.Tensor:
    """The embedding inside a model output: the tensor, ``out[0]`` or ``out['embedding']``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return output["embedding"]
    if isinstance(output, tuple | list):
        return output[0]
    raise TypeError(f"cannot find the embedding in a model output of type {type(output)}")


class RetrievalMetrics(PluginMetric[dict]):
    """Retrieval metrics over an evaluation stream (see the module docstring).

    Rows of the R matrices are indexed by the experience just trained (evaluations before
    any training are kept apart, as ``initial``); columns by the evaluated experience.
    Only the stream named ``stream`` (default ``test_stream``) is measured.
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        map_at_r: bool = True,
        seen_union: bool = True,
        cross_model: bool = False,
        stream: str = "test",
        embedding_fn: Callable[[Any], torch.Tensor] = default_embedding,
        block_size: int = 2048,
        never_reindexed: bool = True,
        compatibility: bool = True,
    ) -> None:
        super().__init__()
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) <= 0:
            raise ValueError(f"every K must be a positive integer, got {self.ks}")
        self.map_at_r = map_at_r
        self.seen_union = seen_union
        self.cross_model = cross_model
        self.stream = stream
        self.embedding_fn = embedding_fn
        self.block_size = block_size
        #: the never-re-indexed gallery and the compatibility matrix (metrics.gallery)
        self.gallery = StoredGallery(self.ks, map_at_r, block_size, never_reindexed,
                                     compatibility)
        self.reset_all()

    # -- state ----------------------------------------------------------------------------
    def reset_all(self) -> None:
        """Forget every stored result (a new run)."""
        self.trained_exp: int | None = None
        self.per_exp: dict[tuple[int, int], RetrievalResult] = {}
        self.seen: dict[int, RetrievalResult] = {}
        self.cross: dict[tuple[int, int], RetrievalResult] = {}
        self.initial: dict[int, RetrievalResult] = {}
        self._galleries: dict[int, dict[int, torch.Tensor]] = {}
        self.gallery.reset()
        self.reset()

    def reset(self) -> None:
        """Clear the buffers of the evaluation in progress (results are kept)."""
        self._emb: list[torch.Tensor] = []
        self._lab: list[torch.Tensor] = []
        self._pass: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def result(self) -> dict[str, Any]:
        """Summary of what has been measured so far."""
        return {"per_experience": {f"{i},{j}": r.recall for (i, j), r in self.per_exp.items()},
                "seen": {i: r.recall for i, r in self.seen.items()}}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume a run's metric history, as tensors and plain values
        (each result as a mapping: a checkpoint loads with ``weights_only=True``)."""
        def plain(results: dict[Any, RetrievalResult]) -> dict[Any, dict[str, Any]]:
            return {key: dataclasses.asdict(r) for key, r in results.items()}

        return {"trained_exp": self.trained_exp, "per_exp": plain(self.per_exp),
                "seen": plain(self.seen), "cross": plain(self.cross),
                "initial": plain(self.initial), "galleries": self._galleries,
                "stored_gallery": self.gallery.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        def results(plain: dict[Any, Any]) -> dict[Any, RetrievalResult]:
            return {key: r if isinstance(r, RetrievalResult) else RetrievalResult(**r)
                    for key, r in plain.items()}

        self.trained_exp = state["trained_exp"]
        self.per_exp, self.seen = results(state["per_exp"]), results(state["seen"])
        self.cross, self.initial = results(state["cross"]), results(state["initial"])
        self._galleries = state["galleries"]
        self.gallery.load_state_dict(state.get("stored_gallery"))  # absent: older checkpoint

    # -- Avalanche callbacks --------------------------------------------------------------
    def _measured(self, strategy: Any) -> bool:
        stream = getattr(getattr(strategy.experience, "origin_stream", None), "name", "test")
        return stream == self.stream

    def after_training_exp(self, strategy: Any) -> None:
        self.trained_exp = int(strategy.experience.current_experience)

    def before_eval(self, strategy: Any) -> None:
        self.reset()
        self._transform = query_transform(strategy)

    def _evaluate(self, emb: torch.Tensor, lab: torch.Tensor) -> RetrievalResult:
        """Leave-one-out retrieval on one set; with a query transform, the transformed
        queries against the plain embeddings, each query's own image left out by index."""
        if self._transform is None:
            return evaluate_retrieval(emb, lab, self.ks, self.map_at_r, self.block_size)
        return evaluate_query_gallery(self._transform(emb), lab, emb, lab, self.ks,
                                      self.map_at_r, True, self.block_size)

    def before_eval_exp(self, strategy: Any) -> None:
        self._emb, self._lab = [], []

    def after_eval_iteration(self, strategy: Any) -> None:
        if self._measured(strategy):
            self._emb.append(self.embedding_fn(strategy.mb_output).detach())
            self._lab.append(strategy.mb_y.detach())

    def after_eval_exp(self, strategy: Any) -> list[MetricValue] | None:
        if not self._measured(strategy) or not self._emb:
            return None
        j = int(strategy.experience.current_experience)
        emb, lab = torch.cat(self._emb), torch.cat(self._lab)
        self._pass[j] = (emb, lab)
        res = self._evaluate(emb, lab)
        if self.trained_exp is None:
            self.initial[j] = res
        else:
            self.per_exp[(self.trained_exp, j)] = res
        return self._values(strategy, res, f"Exp{j:03d}")

    def after_eval(self, strategy: Any) -> list[MetricValue] | None:
        i = self.trained_exp
        if i is None or not self._pass:
            return None
        values: list[MetricValue] = []
        seen = [j for j in sorted(self._pass) if j <= i]
        if self.seen_union and seen:
            emb = torch.cat([self._pass[j][0] for j in seen])
            lab = torch.cat([self._pass[j][1] for j in seen])
            res = self._evaluate(emb, lab)
            self.seen[i] = res
            values += self._values(strategy, res, "seen", suffix="_seen")
        if self.gallery.update(strategy, i, self._pass, self._transform) and i in \
                self.gallery.steps:  # the never-re-indexed gallery (metrics.gallery)
            nri = RetrievalResult(**{k: v for k, v in self.gallery.steps[i]["all"].items()
                                     if k != "queries"})
            values += self._values(strategy, nri, "seen", suffix="_never_reindexed")
        if self.cross_model:
            self._galleries[i] = {j: e.cpu() for j, (e, _) in self._pass.items()}
            for m in sorted(self._galleries):
                if m >= i or not all(j in self._galleries[m] for j in seen):
                    continue
                q = torch.cat([self._pass[j][0] for j in seen])
                if self._transform is not None:
                    q = self._transform(q)
                lab = torch.cat([self._pass[j][1] for j in seen])
                g = torch.cat([self._galleries[m][j] for j in seen]).to(q.device)
                res = evaluate_query_gallery(q, lab, g, lab, self.ks, False, True,
                                             self.block_size)
                self.cross[(i, m)] = res
                values += self._values(strategy, res, f"Model{m:03d}", prefix="CrossModel")
        return values

    def _values(self, strategy: Any, res: RetrievalResult, where: str, suffix: str = "",
                prefix: str = "") -> list[MetricValue]:
        x = strategy.clock.train_iterations
        tail = f"/eval_phase/{self.stream}_stream/{where}"
        out = [MetricValue(self, f"{prefix}Recall@{k}{suffix}{tail}", v, x)
               for k, v in res.recall.items()]
        if res.map_at_r is not None and not prefix:
            out.append(MetricValue(self, f"mAP@R{suffix}{tail}", res.map_at_r, x))
        return out

    # -- matrices ---------------------------------------------------------------------------
    def num_experiences(self) -> int:
        """Size T of the R matrices (largest experience index seen + 1)."""
        idx = [max(i, j) for i, j in self.per_exp] + list(self.initial)
        return max(idx) + 1 if idx else 0

    def r_matrix(self, k: int = 1, metric: str = "recall") -> np.ndarray:
        """``R[i][j]`` = Recall@k (or mAP@R with ``metric='map_at_r'``); NaN where not measured."""
        t = self.num_experiences()
        r = np.full((t, t), np.nan)
        for (i, j), res in self.per_exp.items():
            r[i, j] = res.map_at_r if metric == "map_at_r" else res.recall[k]
        return r

    def seen_curve(self, k: int = 1, metric: str = "recall") -> np.ndarray:
        """Recall@k (or mAP@R) on the union of seen experiences after each experience."""
        t = self.num_experiences()
        out = np.full(t, np.nan)
        for i, res in self.seen.items():
            out[i] = res.map_at_r if metric == "map_at_r" else res.recall[k]
        return out

    def cross_model_matrix(self, k: int = 1) -> np.ndarray:
        """``C[i][m]`` = Recall@k of model i's queries against model m's gallery (m < i)."""
        t = self.num_experiences()
        c = np.full((t, t), np.nan)
        for (i, m), res in self.cross.items():
            c[i, m] = res.recall[k]
        return c

    def __str__(self) -> str:
        return "RetrievalMetrics"
