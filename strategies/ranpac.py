"""``ranpac``, ``ranpac_fs``: RanPAC's random-projection ridge statistics (McDonnell et al.,
NeurIPS 2023) on a frozen trunk, turned into a query-side transform for retrieval."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from strategies.registry import IntRange, StrategyConfig, register_strategy
from strategies.slda import StatisticsBaseline

#: the ridge values tried, RanPAC's grid (``optimise_ridge_parameter``: 10^-8 ... 10^8)
RIDGES: tuple[float, ...] = tuple(float(10.0 ** p) for p in range(-8, 9))


def ridge_losses(g_fit: torch.Tensor, t_fit: torch.Tensor, g_val: torch.Tensor,
                 t_val: torch.Tensor, c_val: float, ridges: tuple[float, ...] = RIDGES
                 ) -> list[float]:
    """The held-out squared error sum_v ||W^T h_v - t_v||^2 of the ridge solution
    W = (G_fit + lambda I)^-1 T_fit for each lambda, from sums only: with G_val = sum_v
    h_v h_v^T, T_val = sum_v h_v t_v^T and c_val = sum_v ||t_v||^2 it is
    tr(W^T G_val W) - 2 tr(W^T T_val) + c_val (one eigendecomposition of G_fit)."""
    e, u = torch.linalg.eigh(g_fit)
    e = e.clamp(min=0.0)
    p, q = u.T @ t_fit, u.T @ t_val
    k = (p @ p.T) * (u.T @ g_val @ u)
    r = (p * q).sum(dim=1)
    out = []
    for lam in ridges:
        inv = 1.0 / (e + lam)
        out.append(float(inv @ k @ inv - 2 * inv @ r + c_val))
    return out


@register_strategy("ranpac")
class RanPAC(StatisticsBaseline):
    """Statistics only (untrained trunk): RanPAC's random ReLU features and ridge statistics.

    A query becomes the ridge prediction of its class's mean embedding.
    h = ReLU(R^T f) with R a d x M Gaussian matrix (seeded); G = sum h h^T and, per class,
    the sums of h and of f over the seen classes' train embeddings. The query transform is
    q' = W^T ReLU(R^T q), W = (G + lambda I)^-1 sum_c (sum_{i in c} h_i) mu_c^T: RanPAC's
    class scores h^T (G + lambda I)^-1 Q weighting the class means mu_c. lambda is chosen
    on the 20% of each class's train images held out (every fifth), from sums, after every
    experience, on everything seen so far."""

    class Config(StrategyConfig):
        proj_dim: int = Field(2048, ge=1, le=16384, description="M, the random projection's "
                              "dimension (at most 16,384: its M x M statistics, held in a "
                              "few float64 copies, take 2 GB each there)")
        seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the random projection")

    #: searched by ``lrbench tune`` (lambda is chosen on held-out images, as RanPAC does)
    tunable = {"proj_dim": IntRange(256, 8192)}

    def projection(self, d: int) -> torch.Tensor:
        """R, the d x M Gaussian projection (float64), the same for every run of a seed."""
        cached = getattr(self, "_r", None)
        if cached is None or cached.shape[0] != d:
            gen = torch.Generator().manual_seed(int(self.config.seed))
            self._r = torch.randn(d, self.config.proj_dim, generator=gen,
                                  dtype=torch.float64)
        return self._r

    def features(self, f: torch.Tensor) -> torch.Tensor:
        """h = ReLU(R^T f) for every row of ``f`` (float64)."""
        return torch.relu(f @ self.projection(f.shape[1]))

    def accumulate(self, feats: torch.Tensor, labels: torch.Tensor,
                   holdout: torch.Tensor) -> None:
        h = self.features(feats)
        hv = h[holdout]
        for key, value in (("g_all", h.T @ h), ("g_val", hv.T @ hv)):
            self.stats[key] = self.stats[key] + value if key in self.stats else value
        per_class = self.stats.setdefault("per_class", {})
        for c in torch.unique(labels):
            at = labels == c
            val = at & holdout
            add = [int(at.sum()), feats[at].sum(dim=0), h[at].sum(dim=0),
                   int(val.sum()), h[val].sum(dim=0)]
            old = per_class.get(int(c))
            per_class[int(c)] = add if old is None else [a + b for a, b in zip(old, add,
                                                                                strict=True)]

    def refresh(self) -> None:
        per_class = self.stats["per_class"]
        classes = sorted(per_class)
        mu = torch.stack([per_class[c][1] / per_class[c][0] for c in classes])  # C x d
        s_all = torch.stack([per_class[c][2] for c in classes])  # C x M
        s_val = torch.stack([per_class[c][4] for c in classes])
        n_val = torch.tensor([float(per_class[c][3]) for c in classes], dtype=torch.float64)
        g_all, g_val = self.stats["g_all"], self.stats["g_val"]
        t_all, t_val = s_all.T @ mu, s_val.T @ mu  # M x d
        if float(n_val.sum()) > 0:
            c_val = float((n_val * (mu * mu).sum(dim=1)).sum())
            losses = ridge_losses(g_all - g_val, t_all - t_val, g_val, t_val, c_val)
            self.ridge = RIDGES[int(np.argmin(losses))]
        else:  # no class has five train images: nothing held out
            self.ridge = 1.0
        eye = torch.eye(g_all.shape[0], dtype=g_all.dtype)
        self._w = torch.linalg.solve(g_all + self.ridge * eye, t_all)

    def transform64(self, q: torch.Tensor) -> torch.Tensor:
        return self.features(q) @ self._w


@register_strategy("ranpac_fs")
class RanPACFirstSession(RanPAC):
    """ranpac on the first session's trunk (experience 0 trains as first_session).

    RanPAC's first-session adaptation; then only statistics accumulate."""

    trains_experiences = 1
    #: the first experience trains as finetune does (the kit checks it)
    first_loop_as = "finetune"
    pooled_embedding = False
