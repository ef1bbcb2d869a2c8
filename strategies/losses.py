"""Metric-learning losses (DESIGN.md, "Training") and the factory that builds them by name.

``hard_mining_loss`` is the thesis's base loss; the others come from
pytorch-metric-learning. Every loss is called as ``loss(embeddings, labels)`` and returns a
scalar, so the training template and Avalanche's ``criterion`` slot take any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MetricLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def hard_mining_loss(f: torch.Tensor, y: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """The thesis's hard-mining loss on L2-normalised embeddings ``f`` (B x d).

    With s_ij = f_i . f_j, anchor i keeps the negatives with s_in > min_p s_ip - m and the
    positives with s_ip < max_n s_in + m; l_i = mean_kept_p (1 - s_ip) + mean_kept_n s_in,
    an empty set contributing 0; the loss is (1/B) sum_i l_i. Positives exclude i itself.
    """
    f = F.normalize(f, dim=1)
    s = f @ f.T
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=f.device)
    pos, neg = same & ~eye, ~same
    inf = torch.tensor(float("inf"), device=f.device, dtype=s.dtype)
    min_p = torch.where(pos, s, inf).amin(dim=1)
    max_n = torch.where(neg, s, -inf).amax(dim=1)
    kept_n = neg & (s > (min_p - margin)[:, None])
    kept_p = pos & (s < (max_n + margin)[:, None])
    zero = torch.zeros((), device=f.device, dtype=s.dtype)
    pos_term = torch.where(kept_p, 1 - s, zero).sum(1) / kept_p.sum(1).clamp(min=1)
    neg_term = torch.where(kept_n, s, zero).sum(1) / kept_n.sum(1).clamp(min=1)
    return (pos_term + neg_term).mean()


class HardMiningLoss(nn.Module):
    """Module form of :func:`hard_mining_loss`."""

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return hard_mining_loss(f, y, self.margin)


class _PMLWithMiner(nn.Module):
    """A pytorch-metric-learning loss with its miner, called as ``loss(f, y)``."""

    def __init__(self, loss: Any, miner: Any = None) -> None:
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pairs = self.miner(f, y) if self.miner is not None else None
        return self.loss(f, y, pairs)


METRIC_LOSSES = ("hard_mining", "triplet", "multi_similarity", "normalized_softmax")


def make_metric_loss(name: str = "hard_mining", margin: float = 0.1,
                     embedding_size: int = 512, num_classes: int = 1000) -> nn.Module:
    """Build a metric loss by name (``METRIC_LOSSES``).

    ``triplet`` is batch-hard triplet (margin ``margin``), ``multi_similarity`` uses its
    miner, ``normalized_softmax`` needs ``embedding_size`` and an upper bound on
    ``num_classes`` (its proxies are a parameter of the loss).
    """
    from pytorch_metric_learning import losses, miners

    if name == "hard_mining":
        return HardMiningLoss(margin)
    if name == "triplet":
        return _PMLWithMiner(losses.TripletMarginLoss(margin=margin),
                             miners.BatchHardMiner())
    if name == "multi_similarity":
        return _PMLWithMiner(losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner())
    if name == "normalized_softmax":
        return _PMLWithMiner(losses.NormalizedSoftmaxLoss(num_classes, embedding_size))
    raise ValueError(f"unknown metric loss {name!r}; use one of {', '.join(METRIC_LOSSES)}")
