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


def trainable_parameters(model: nn.Module, criterion: Any = None) -> list[nn.Parameter]:
    """What the optimizer must update: the model's trainable parameters, then the loss's.

    Some metric losses own parameters (``normalized_softmax``'s proxies, learnable
    temperatures): built from the model alone, an optimizer would never train them. Each
    parameter appears once; those with ``requires_grad`` off are left out.
    """
    owned = criterion.parameters() if isinstance(criterion, nn.Module) else ()
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for param in (*model.parameters(), *owned):
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            out.append(param)
    return out


# -- distillation losses (the thesis methods) ----------------------------------------------
def correlation_distillation(f_s: torch.Tensor, f_t: torch.Tensor, temperature: float = 4.0,
                             direction: str = "teacher_to_student") -> torch.Tensor:
    """Correlation distillation between two batches of embeddings (B x d each).

    With S = F F^T (B x B, diagonal included) on L2-normalised F:
    ``(T^2 / B) sum_i KL(softmax(S_t[i] / T) || softmax(S_s[i] / T))``. With
    ``direction="student_to_teacher"`` the two distributions swap places (the reference
    implementation's effective form). Gradients reach only ``f_s``.
    """
    if direction not in ("teacher_to_student", "student_to_teacher"):
        raise ValueError("direction must be 'teacher_to_student' or 'student_to_teacher'")
    t = temperature
    fs, ft = F.normalize(f_s, dim=1), F.normalize(f_t.detach(), dim=1)
    log_p_s = F.log_softmax(fs @ fs.T / t, dim=1)
    log_p_t = F.log_softmax(ft @ ft.T / t, dim=1)
    if direction == "teacher_to_student":
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    else:
        kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=1)
    return kl.mean() * t * t


def mmd(f_s: torch.Tensor, f_t: torch.Tensor, sigmas: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """Squared MMD between two samples with a Gaussian kernel (sum over ``sigmas``).

    ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``; the biased (V-statistic) estimate
    ``mean k(s, s') + mean k(t, t') - 2 mean k(s, t)``, which is never negative.
    """
    x = torch.cat([f_s, f_t.detach()])
    d2 = torch.cdist(x, x).pow(2)
    k = sum(torch.exp(-d2 / (2 * s * s)) for s in sigmas)
    n = f_s.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def bn_statistics_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """How far ``x``'s feature statistics are from ``model``'s BatchNorm running statistics.

    ``sum_l ||mu_l(x) - mu_l^run||_2 + ||var_l(x) - var_l^run||_2`` over every BatchNorm
    layer l, with the batch mean and (biased) variance of each layer's input. The model's
    forward runs as it is (call it in eval mode: running statistics normalise, and stay).
    """
    terms: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        a = inputs[0]
        dims = [0] + list(range(2, a.dim()))
        mean = a.mean(dim=dims)
        var = a.var(dim=dims, unbiased=False)
        terms.append(torch.linalg.vector_norm(mean - module.running_mean)
                     + torch.linalg.vector_norm(var - module.running_var))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not handles:
        raise ValueError("the model has no BatchNorm layer with running statistics")
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(terms).sum()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (an image smoothness prior)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]).abs().mean()
