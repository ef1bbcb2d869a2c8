"""``slda``, ``slda_fs``: a statistics-only baseline on a frozen trunk, a query-side LDA
metric (Deep SLDA, Hayes & Kanan 2020; FeCAM, Goswami et al. 2023), and the base class of
the statistics-only baselines (``ranpac`` builds on it).

The model never trains after its first session (``slda``: the untrained trunk, as
``pretrained``; ``slda_fs``: the first session trained as ``first_session``). After each
experience the model embeds that experience's train images (eval mode, no augmentation)
and only sums of those features are kept, never an image. From them a transform of the
QUERY embedding is built; the evaluation ranks the gallery's plain embeddings by their
cosine similarity to the transformed query (``metrics.plugins``, ``query_transform``), so
stored gallery vectors never go stale and nothing the model knew can be forgotten.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field

from strategies.buffers import embed_items, evaluation_items
from strategies.registry import (
    Callbacks,
    LogUniform,
    StrategyConfig,
    StrategyPlugin,
    register_strategy,
)


class StatisticsBaseline(StrategyPlugin, Callbacks):
    """Base of the statistics-only baselines: after each experience the model's embeddings
    of its train images (eval mode, evaluation transform) are added to running sums by
    :meth:`accumulate`; :meth:`query_transform` maps query embeddings with what the sums
    give. Subclasses say what they sum and how the transform follows (:meth:`refresh`)."""

    trains_experiences = 0
    pooled_embedding = True
    #: queries are ranked through a transform of their own: no embedding space to move
    #: a stored gallery in (the gallery never goes stale: the trunk is frozen)
    exposes_embeddings = False

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.stats: dict[str, Any] = {}

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        exp = strategy.experience
        feats, labels = embed_items(strategy, evaluation_items(exp))
        self.accumulate(feats, labels, holdout_mask(labels))
        self.refresh()

    def accumulate(self, feats: torch.Tensor, labels: torch.Tensor,
                   holdout: torch.Tensor) -> None:
        """Add ``feats`` (n x d, float64) of classes ``labels`` to the sums; ``holdout``
        marks the images held out for choosing a hyperparameter (used by ``ranpac``)."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Recompute the query transform from the sums."""
        raise NotImplementedError

    def transform64(self, q: torch.Tensor) -> torch.Tensor:
        """The query transform on float64 CPU embeddings (the sums are float64)."""
        raise NotImplementedError

    def query_transform(self, q: torch.Tensor) -> torch.Tensor:
        """The transformed query embeddings (the input unchanged before any statistics)."""
        if not self.stats:
            return q
        return self.transform64(q.detach().double().cpu()).to(q.device, q.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"stats": copy.deepcopy(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = copy.deepcopy(state["stats"])
        if self.stats:
            self.refresh()


def holdout_mask(labels: torch.Tensor, every: int = 5) -> torch.Tensor:
    """Which images are held out: within each class, in the experience's index order, every
    ``every``-th (ranks every-1, 2*every-1, ...: 20% by default). A property of the data,
    not of the order experiences or classes arrive in."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        mask[idx[every - 1::every]] = True
    return mask


def class_sums(feats: torch.Tensor, labels: torch.Tensor) -> dict[int, tuple[int, torch.Tensor]]:
    """Per class: (count, sum of its rows of ``feats``)."""
    return {int(c): (int((labels == c).sum()), feats[labels == c].sum(dim=0))
            for c in torch.unique(labels)}


def add_class_sums(into: dict[int, list[Any]], feats: torch.Tensor,
                   labels: torch.Tensor) -> None:
    """Add :func:`class_sums` of ``feats`` into ``into`` (class -> [count, sum])."""
    for c, (n, s) in class_sums(feats, labels).items():
        if c in into:
            into[c] = [into[c][0] + n, into[c][1] + s]
        else:
            into[c] = [n, s]


def within_class_covariance(second: torch.Tensor, per_class: dict[int, list[Any]]
                            ) -> torch.Tensor:
    """The pooled within-class covariance from sums: (sum_i x_i x_i^T - sum_c s_c s_c^T /
    n_c) / (N - C), with N images in C classes (N when N <= C)."""
    n = sum(int(v[0]) for v in per_class.values())
    scatter = second.clone()
    for count, s in per_class.values():
        scatter -= torch.outer(s, s) / count
    dof = n - len(per_class)
    return scatter / (dof if dof > 0 else max(n, 1))


def shrink(cov: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - gamma) cov + gamma (tr(cov) / d) I: shrinkage towards a scaled identity."""
    d = cov.shape[0]
    scale = float(torch.trace(cov)) / d
    if scale <= 0:
        scale = 1.0
    return (1 - gamma) * cov + gamma * scale * torch.eye(d, dtype=cov.dtype)


@register_strategy("slda")
class SLDA(StatisticsBaseline):
    """Statistics only (untrained trunk): queries mapped by the inverse within-class covariance.

    s(q, g) = (A q)^T g with A = P Lambda P, Lambda = ((1 - gamma) Sigma_w + gamma
    tr(Sigma_w)/d I)^-1, Sigma_w the pooled within-class covariance of the seen classes'
    train embeddings and P = I - m m^T the projection off the direction m of their mean,
    all from sums (class counts and sums, one d x d second moment): the same after the last
    experience whatever order the classes came in. q^T A g is the whitened inner product
    (Lambda^1/2 P q)^T (Lambda^1/2 P g), computed by transforming the query alone."""

    class Config(StrategyConfig):
        shrinkage: float = Field(0.5, gt=0, le=1, description="gamma: weight of the scaled "
                                 "identity in the shrunk covariance (1: plain cosine)")

    #: searched by ``lrbench tune``
    tunable = {"shrinkage": LogUniform(1e-3, 1.0)}

    def accumulate(self, feats: torch.Tensor, labels: torch.Tensor,
                   holdout: torch.Tensor) -> None:
        second = feats.T @ feats
        self.stats["second"] = self.stats["second"] + second if "second" in self.stats \
            else second
        per_class = self.stats.setdefault("per_class", {})
        add_class_sums(per_class, feats, labels)

    def refresh(self) -> None:
        per_class = self.stats["per_class"]
        cov = within_class_covariance(self.stats["second"], per_class)
        self._precision = torch.linalg.inv(shrink(cov, self.config.shrinkage))
        mean = sum(v[1] for v in per_class.values()) / sum(v[0] for v in per_class.values())
        common = mean / mean.norm().clamp(min=1e-12)
        off = torch.eye(len(common), dtype=common.dtype) - torch.outer(common, common)
        self._matrix = off @ self._precision @ off

    def precision(self) -> torch.Tensor:
        """Lambda, the inverse of the shrunk within-class covariance."""
        return self._precision

    def matrix(self) -> torch.Tensor:
        """A = P Lambda P, the query-side matrix (P: the common direction projected out)."""
        return self._matrix

    def transform64(self, q: torch.Tensor) -> torch.Tensor:
        return q @ self._matrix


@register_strategy("slda_fs")
class SLDAFirstSession(SLDA):
    """slda on the first session's trunk (experience 0 trains as first_session).

    Then the model is frozen and only statistics accumulate."""

    trains_experiences = 1
    #: the first experience trains as finetune does (the kit checks it)
    first_loop_as = "finetune"
    pooled_embedding = False
