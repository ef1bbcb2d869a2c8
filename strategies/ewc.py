"""``ewc``: Avalanche's EWC plugin, importance from the metric loss."""

from __future__ import annotations

from typing import Any, Literal

from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import ParamData
from pydantic import Field

from strategies.registry import StrategyConfig, StrategyPlugin, register_strategy


def params_to_state(params: dict[int, dict[str, ParamData]]) -> dict[int, dict[str, Any]]:
    """ParamData dictionaries as plain tensors (checkpointable)."""
    return {e: {k: p.data.detach().cpu().clone() for k, p in d.items()}
            for e, d in params.items()}


def state_to_params(state: dict[int, dict[str, Any]]) -> dict[int, dict[str, ParamData]]:
    """Inverse of :func:`params_to_state`."""
    return {e: {k: ParamData(k, t.shape, init_tensor=t.clone()) for k, t in d.items()}
            for e, d in state.items()}


@register_strategy("ewc")
class EWC(StrategyPlugin, EWCPlugin):
    """EWC: a quadratic penalty on parameter change, weighted by Fisher information.

    Avalanche's ``EWCPlugin`` as it is; the Fisher information comes from the gradients of
    the strategy's criterion, which here is the metric loss on embeddings (not a
    classification loss), computed over the experience's training images.
    """

    regularizer = True

    class Config(StrategyConfig):
        ewc_lambda: float = Field(100.0, ge=0, description="weight of the EWC penalty")
        mode: Literal["separate", "online"] = Field(
            "separate", description="one penalty per experience, or one decayed penalty")
        decay_factor: float | None = Field(
            None, ge=0, le=1, description="importance decay for mode 'online'")

    def __init__(self, config: StrategyConfig | None = None) -> None:
        config = config if config is not None else self.Config()
        if config.mode == "online" and config.decay_factor is None:
            config = config.model_copy(update={"decay_factor": 1.0})
        EWCPlugin.__init__(self, ewc_lambda=config.ewc_lambda, mode=config.mode,
                           decay_factor=config.decay_factor)
        self.config = config

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        before = float(strategy.loss.detach())
        super().before_backward(strategy, **kwargs)
        self.log_added_loss(strategy, "ewc", before)

    def state_dict(self) -> dict[str, Any]:
        return {"saved_params": params_to_state(self.saved_params),
                "importances": params_to_state(self.importances)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved_params.clear()
        self.importances.clear()
        self.saved_params.update(state_to_params(state["saved_params"]))
        self.importances.update(state_to_params(state["importances"]))
