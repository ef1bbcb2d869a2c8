"""``ewc``: Avalanche's EWC plugin, importance from the metric loss."""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from strategies.registry import (
    Callbacks,
    LogUniform,
    StrategyConfig,
    StrategyPlugin,
    register_strategy,
)

#: mixed into the importance pass's sampler seed, so it draws other batches than training
_IMPORTANCE_STREAM = 0xE3C


def params_to_state(params: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Avalanche's ParamData dictionaries as plain tensors (checkpointable)."""
    return {e: {k: p.data.detach().cpu().clone() for k, p in d.items()}
            for e, d in params.items()}


def state_to_params(state: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Inverse of :func:`params_to_state`."""
    from avalanche.training.utils import ParamData

    return {e: {k: ParamData(k, t.shape, init_tensor=t.clone()) for k, t in d.items()}
            for e, d in state.items()}


@functools.cache
def pk_ewc_plugin() -> type:
    """Avalanche's ``EWCPlugin`` whose importance pass reads P x K batches (see
    :class:`EWC`); made on first use, so importing this module does not import Avalanche."""
    from avalanche.training.plugins import EWCPlugin

    from strategies.template import pk_order

    class PKEWCPlugin(EWCPlugin):
        #: (P, K, sampler seed) of the importance pass under way, None outside it
        pk: tuple[int, int, int] | None = None

        def compute_importances(self, model: Any, criterion: Any, optimizer: Any,
                                dataset: Any, device: Any, batch_size: int,
                                num_workers: int = 0) -> dict[str, Any]:
            """Avalanche's importance pass, over P x K batches, with the model's
            train/eval mode restored afterwards."""
            if self.pk is not None:
                p, k, seed = self.pk
                targets = [int(t) for t in dataset.targets]
                p = min(p, len(set(targets)))
                dataset = dataset.subset(pk_order(targets, p, k, seed))
                batch_size = p * k
            was_training = model.training
            try:
                return super().compute_importances(model, criterion, optimizer, dataset,
                                                   device, batch_size,
                                                   num_workers=num_workers)
            finally:
                model.train(was_training)

    return PKEWCPlugin


@register_strategy("ewc")
class EWC(StrategyPlugin, Callbacks):
    """EWC: a quadratic penalty on parameter change, weighted by Fisher information.

    Avalanche's ``EWCPlugin``; the Fisher information comes from the gradients of the
    strategy's criterion, which here is the metric loss on embeddings (not a
    classification loss), computed over the experience's training images.

    One change: Avalanche's importance pass reads the experience unshuffled, and datasets
    stored class by class (CUB's lists) then give one-class batches, on which a metric loss
    has no negatives: zero loss, zero gradients, zero importance, and EWC would be
    fine-tuning. The pass here reads P x K batches (the template's ``p``, ``k``), one
    pass's worth of images, drawn by the training sampler with its own seed (from the run's
    seed and the experience; the global RNGs are not consumed by the drawing).
    """

    regularizer = True
    #: no teacher, importances or buffer yet: the first loop is finetune's (kit-checked)
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        ewc_lambda: float = Field(100.0, ge=0, description="weight of the EWC penalty")
        mode: Literal["separate", "online"] = Field(
            "separate", description="one penalty per experience, or one decayed penalty")
        decay_factor: float | None = Field(
            None, ge=0, le=1, description="importance decay for mode 'online'")

        @field_validator("decay_factor")
        @classmethod
        def _online_only(cls, value: float | None, info: ValidationInfo) -> float | None:
            # Avalanche asserts it when the plugin is built, i.e. in every cell, at run time
            if value is not None and info.data.get("mode") != "online":
                raise ValueError("decay_factor acts only in mode 'online': set mode: online, "
                                 "or remove decay_factor")
            return value

    #: searched by ``lrbench tune``
    tunable = {"ewc_lambda": LogUniform(1.0, 1e5)}
    #: the penalty's weight (the importances do not depend on it)
    inactive_in_first_experience = frozenset({"ewc_lambda"})

    def __init__(self, config: StrategyConfig | None = None) -> None:
        config = config if config is not None else self.Config()
        if config.mode == "online" and config.decay_factor is None:
            config = config.model_copy(update={"decay_factor": 1.0})
        super().__init__(config)
        #: Avalanche's plugin doing the work (:func:`pk_ewc_plugin`)
        self.ewc = pk_ewc_plugin()(ewc_lambda=config.ewc_lambda, mode=config.mode,
                                   decay_factor=config.decay_factor)

    @property
    def importances(self) -> dict[int, dict[str, Any]]:
        """Fisher information per experience (Avalanche's ``ParamData``)."""
        return self.ewc.importances

    @property
    def saved_params(self) -> dict[int, dict[str, Any]]:
        """Parameters after each experience (Avalanche's ``ParamData``)."""
        return self.ewc.saved_params

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        p, k = getattr(strategy, "p", None), getattr(strategy, "k", None)
        if p is not None and k is not None:  # a template drawing P x K batches
            exp = int(strategy.experience.current_experience)
            seed = np.random.SeedSequence([int(getattr(strategy, "seed", 0)), exp,
                                           _IMPORTANCE_STREAM]).generate_state(1)[0]
            self.ewc.pk = (int(p), int(k), int(seed))
        try:
            self.ewc.after_training_exp(strategy, **kwargs)
        finally:
            self.ewc.pk = None

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        before = float(strategy.loss.detach())
        self.ewc.before_backward(strategy, **kwargs)
        self.log_added_loss(strategy, "ewc", before)

    def state_dict(self) -> dict[str, Any]:
        return {"saved_params": params_to_state(self.saved_params),
                "importances": params_to_state(self.importances)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved_params.clear()
        self.importances.clear()
        self.saved_params.update(state_to_params(state["saved_params"]))
        self.importances.update(state_to_params(state["importances"]))
