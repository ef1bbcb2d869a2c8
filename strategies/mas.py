"""``mas``: Avalanche's MAS plugin, importance from the embedding's norm before normalisation."""

from __future__ import annotations

import functools
from typing import Any

import torch
from pydantic import Field
from torch.utils.data import DataLoader

from strategies.registry import (
    Callbacks,
    LogUniform,
    StrategyConfig,
    StrategyPlugin,
    register_strategy,
)


def raw_norm_importance(strategy: Any) -> dict[str, Any]:
    """MAS importance from the squared norm of the embedding before normalisation, the
    model in eval mode (see :class:`MAS`): mean absolute gradient per parameter."""
    from avalanche.training.utils import zerolike_params_dict

    model = strategy.model
    importance = dict(zerolike_params_dict(model))
    dataset = strategy.experience.dataset
    loader = DataLoader(dataset, batch_size=strategy.train_mb_size,
                        collate_fn=getattr(dataset, "collate_fn", None))
    was_training = model.training
    model.eval()  # BatchNorm: running statistics used, not updated
    try:
        for batch in loader:
            strategy.optimizer.zero_grad()
            x = batch[0].to(strategy.device)
            out = model.embed_raw(x) if hasattr(model, "embed_raw") else model(x)
            out.norm(p=2, dim=1).pow(2).mean().backward()
            for name, param in model.named_parameters():
                if param.requires_grad and param.grad is not None:
                    importance[name].data += param.grad.abs()
    finally:
        model.train(was_training)
        strategy.optimizer.zero_grad()
    for value in importance.values():
        value.data /= float(max(len(loader), 1))
    return importance


@functools.cache
def raw_norm_mas_plugin() -> type:
    """Avalanche's ``MASPlugin`` taking its importance from :func:`raw_norm_importance`;
    made on first use, so importing this module does not import Avalanche."""
    from avalanche.training.plugins import MASPlugin

    class RawNormMASPlugin(MASPlugin):
        def _get_importance(self, strategy: Any) -> dict[str, Any]:
            return raw_norm_importance(strategy)

        def before_backward(self, strategy: Any, **kwargs: Any) -> None:
            """Avalanche's penalty (avalanche-lib 0.6 ``MASPlugin.before_backward``, the
            same sum in the same order), without its ``if not strategy.loss`` check: a
            batch whose metric loss is exactly 0.0 (no triplet violating the margin) is
            a falsy tensor, which Avalanche refuses with 'Loss is not available'."""
            if strategy.clock.train_exp_counter == 0:
                return
            if not self.importance:
                raise ValueError("Importance is not available")
            if not self.params:
                raise ValueError("Parameters are not available")
            loss_reg: Any = 0.0
            for name, param in strategy.model.named_parameters():
                if name in self.importance:
                    loss_reg += torch.sum(
                        self.importance[name].expand(param.shape)
                        * (param - self.params[name].expand(param.shape)).pow(2))
            strategy.loss += self._lambda * loss_reg

    return RawNormMASPlugin


@register_strategy("mas")
class MAS(StrategyPlugin, Callbacks):
    """MAS: a penalty on parameter change weighted by output sensitivity.

    Avalanche's ``MASPlugin`` measures the sensitivity of the squared L2 norm of the model's
    output; our output is L2-normalised (norm 1, gradient 0), so the importance is taken
    from the embedding *before* normalisation (``model.embed_raw``); the rest is
    Avalanche's (accumulation with ``alpha``, penalty from the second experience).

    The importance pass runs with the model in eval mode (Avalanche's runs it in train
    mode): BatchNorm then normalises with its running statistics and leaves them as they
    were, so measuring importance does not change the model; gradients still flow. It
    reads every training image once, unshuffled: the output norm needs no labels, and in
    eval mode a batch's composition changes nothing.
    """

    regularizer = True
    #: no teacher, importances or buffer yet: the first loop is finetune's (kit-checked)
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        lambda_reg: float = Field(1.0, ge=0, description="weight of the MAS penalty")
        alpha: float = Field(0.5, ge=0, le=1, description="weight of old importance")

    #: searched by ``lrbench tune``
    tunable = {"lambda_reg": LogUniform(0.01, 100.0)}
    #: the penalty's weight (the importances do not depend on it)
    inactive_in_first_experience = frozenset({"lambda_reg"})

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        #: Avalanche's plugin doing the work (:func:`raw_norm_mas_plugin`)
        self.mas = raw_norm_mas_plugin()(lambda_reg=self.config.lambda_reg,
                                         alpha=self.config.alpha)

    @property
    def importance(self) -> dict[str, Any] | None:
        """The accumulated importance (Avalanche's ``ParamData``), None before any."""
        return self.mas.importance

    @property
    def params(self) -> dict[str, Any] | None:
        """The parameters after the last experience (Avalanche's ``ParamData``)."""
        return self.mas.params

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.mas.after_training_exp(strategy, **kwargs)

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        before = float(strategy.loss.detach())
        self.mas.before_backward(strategy, **kwargs)
        self.log_added_loss(strategy, "mas", before)

    def state_dict(self) -> dict[str, Any]:
        def plain(d: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
            return None if d is None else {k: v.data.detach().cpu().clone() for k, v in d.items()}

        return {"params": plain(self.params), "importance": plain(self.importance)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from avalanche.training.utils import ParamData

        def rebuild(d: dict[str, torch.Tensor] | None) -> dict[str, Any] | None:
            return None if d is None else {
                k: ParamData(k, t.shape, init_tensor=t.clone()) for k, t in d.items()}

        self.mas.params = rebuild(state["params"])
        self.mas.importance = rebuild(state["importance"])
