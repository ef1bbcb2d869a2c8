"""``sdc``: semantic drift compensation (Yu et al., CVPR 2020) of a stored gallery."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, ValidationInfo, field_validator

from strategies.drift import DriftCompensation, check_wrapped, resolve_wrapped
from strategies.registry import LogUniform, StrategyConfig, register_strategy

#: rows of the points moved at once (bounds the n_points x n_train distance block)
_BLOCK = 4096


def sdc_weights(anchors: torch.Tensor, points: torch.Tensor, sigma: float) -> torch.Tensor:
    """The normalised kernel weights, points x anchors: ``w_i / sum_i w_i`` with
    ``w_i = exp(-||anchor_i - v||^2 / (2 sigma^2))``, computed in log space (a softmax of
    the exponents), so the sum never underflows to 0: the nearest anchor's weight is
    exp(0) = 1 before the division, whatever the distances and sigma."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    d2 = torch.cdist(points, anchors, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    return torch.softmax(-d2 / (2.0 * sigma * sigma), dim=1)


def sdc_drift(old: torch.Tensor, new: torch.Tensor, points: torch.Tensor,
              sigma: float) -> torch.Tensor:
    """SDC's drift at each of ``points`` (float64 rows, the old model's space): the
    kernel-weighted mean ``sum_i w_i (new_i - old_i) / sum_i w_i`` of the displacements
    of the current experience's train embeddings ``old`` (z^{t-1}) -> ``new`` (z^t),
    weighted by the distance from each point to ``old`` (:func:`sdc_weights`)."""
    delta = new - old
    out = [sdc_weights(old, points[a:a + _BLOCK], sigma) @ delta
           for a in range(0, len(points), _BLOCK)]
    return torch.cat(out) if out else points.new_zeros((0, old.shape[1]))


@register_strategy("sdc")
class SDC(DriftCompensation):
    """SDC: a training strategy (sdc_on), its stored gallery moved by the estimated drift.

    After each experience t >= 1 every stored vector v of an earlier experience (and every
    class prototype) becomes ``v + sum_i w_i (z_i^t - z_i^{t-1}) / sum_i w_i``, ``w_i =
    exp(-||z_i^{t-1} - v||^2 / (2 sigma^2))`` over the current experience's train images i
    (label-free). The wrapped strategy trains as it does alone."""

    wraps = "sdc_on"

    class Config(StrategyConfig):
        sdc_on: str = Field("finetune", description="the training strategy wrapped (any "
                            "registered one that ranks by its embedding)")
        on_params: dict[str, Any] = Field(
            default_factory=dict, validate_default=True,
            description="the wrapped strategy's hyperparameters")
        sigma: float = Field(0.3, gt=0, description="kernel width of the drift estimate "
                             "(on the L2-normalised embeddings)")

        @field_validator("sdc_on")
        @classmethod
        def _wrappable(cls, name: Any) -> str:
            return check_wrapped(name, "sdc_on")

        @field_validator("on_params")
        @classmethod
        def _resolved(cls, params: Any, info: ValidationInfo) -> dict[str, Any]:
            return resolve_wrapped(info.data.get("sdc_on"), params)

    #: searched by ``lrbench tune``
    tunable = {"sigma": LogUniform(0.05, 2.0)}
    #: the estimate starts after the first experience
    inactive_in_first_experience = frozenset({"sigma"})

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self._old: torch.Tensor | None = None
        self._new: torch.Tensor | None = None

    def fit(self, strategy: Any, old: torch.Tensor, new: torch.Tensor) -> None:
        self._old, self._new = old, new

    def move(self, vectors: torch.Tensor) -> torch.Tensor:
        if self._old is None or self._new is None:
            return vectors
        return vectors + sdc_drift(self._old, self._new, vectors, self.config.sigma)

    def own_state(self) -> dict[str, Any]:
        return {"old": self._old, "new": self._new}

    def load_own_state(self, state: dict[str, Any]) -> None:
        self._old, self._new = state["old"], state["new"]
