"""``ldc``: a learned drift compensation (LDC, Gomez-Villa et al., ECCV 2024) of a stored
gallery."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from strategies.drift import DriftCompensation, check_wrapped, resolve_wrapped
from strategies.registry import (
    IntRange,
    LogUniform,
    StrategyConfig,
    derived_seed,
    register_strategy,
)


def ldc_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The projector's training loss: the mean squared error over every element,
    ``mean_{i,d} (P z_i^{t-1} - z_i^t)_d^2`` (``torch.nn.MSELoss()``)."""
    return (projected - target).pow(2).mean()


def fit_projector(old: torch.Tensor, new: torch.Tensor, epochs: int, lr: float,
                  batch_size: int, seed: int, init: str = "identity"
                  ) -> tuple[torch.Tensor, list[float]]:
    """A linear map P (no bias) from the old embedding space to the new one, trained with
    Adam on :func:`ldc_loss` over minibatches of the pairs (z^{t-1}_i, z^t_i), ``epochs``
    passes in an order drawn from ``seed`` (its own generator: no global random state is
    touched). P starts as the identity (``init="identity"``: no step, no move) or as
    ``torch.nn.Linear``'s default initialisation drawn from the same generator
    (``"random"``, the reference's). Returns P (new_dim x old_dim, float64) and each
    epoch's mean loss."""
    gen = torch.Generator().manual_seed(int(seed))
    old, new = old.double(), new.double()
    weight = torch.empty(new.shape[1], old.shape[1], dtype=torch.float64)
    if init == "identity":
        torch.nn.init.eye_(weight)
    else:
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    weight.requires_grad_(True)
    opt = torch.optim.Adam([weight], lr=lr)
    n = len(old)
    history = []
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for a in range(0, n, batch_size):
                idx = order[a:a + batch_size]
                loss = ldc_loss(old[idx] @ weight.T, new[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / max(n, 1))
    return weight.detach(), history


@register_strategy("ldc")
class LDC(DriftCompensation):
    """LDC: a training strategy (ldc_on), its stored gallery moved by a learned projector.

    After each experience t >= 1 a linear projector P (no bias) is trained on the current
    experience's train embeddings to map z^{t-1} to z^t (MSE, Adam); every stored vector v
    of an earlier experience (and every class prototype) becomes ``P v``. The wrapped
    strategy trains as it does alone."""

    wraps = "ldc_on"

    class Config(StrategyConfig):
        ldc_on: str = Field("finetune", description="the training strategy wrapped (any "
                            "registered one that ranks by its embedding)")
        on_params: dict[str, Any] = Field(
            default_factory=dict, validate_default=True,
            description="the wrapped strategy's hyperparameters")
        epochs: int = Field(20, ge=1, le=10_000, description="passes of the projector's "
                            "training over the experience's train embeddings")
        lr: float = Field(1e-3, gt=0, description="Adam's learning rate for the projector")
        batch_size: int = Field(128, ge=1, le=1_000_000, description="pairs per step of "
                                "the projector's training")
        init: Literal["identity", "random"] = Field(
            "identity", description="the projector's start: the identity (an unfit "
            "projector moves nothing) or torch.nn.Linear's random initialisation (the "
            "reference's)")

        @field_validator("ldc_on")
        @classmethod
        def _wrappable(cls, name: Any) -> str:
            return check_wrapped(name, "ldc_on")

        @field_validator("on_params")
        @classmethod
        def _resolved(cls, params: Any, info: ValidationInfo) -> dict[str, Any]:
            return resolve_wrapped(info.data.get("ldc_on"), params)

    #: searched by ``lrbench tune``
    tunable = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(5, 50)}
    #: the projector is trained from the second experience on
    inactive_in_first_experience = frozenset({"epochs", "lr", "batch_size", "init"})

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.projector: torch.Tensor | None = None
        #: per experience: the projector's mean training loss in its last epoch
        self.fit_loss: dict[int, float] = {}

    def fit(self, strategy: Any, old: torch.Tensor, new: torch.Tensor) -> None:
        exp = int(strategy.experience.current_experience)
        cfg = self.config
        seed = derived_seed(int(getattr(strategy, "seed", 0) or 0), 7_919, exp)
        self.projector, history = fit_projector(old, new, cfg.epochs, cfg.lr,
                                                cfg.batch_size, seed, cfg.init)
        self.fit_loss[exp] = history[-1]

    def move(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.projector is None:
            return vectors
        return vectors @ self.projector.T

    def own_state(self) -> dict[str, Any]:
        return {"projector": self.projector, "fit_loss": dict(self.fit_loss)}

    def load_own_state(self, state: dict[str, Any]) -> None:
        self.projector = state["projector"]
        self.fit_loss = dict(state["fit_loss"])
