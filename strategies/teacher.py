"""Shared machinery of distillation strategies: the frozen teacher.

Teacher = a frozen copy of the model after the previous experience, in eval mode
(DESIGN.md, "Strategies"). Its forward passes run under ``torch.inference_mode`` (no
autograd bookkeeping at all), once per batch: :meth:`TeacherPlugin.teacher_embed` keeps the
last batch's embeddings, so terms that need them (LwF's logits, MMD, ...) share one pass,
and that pass runs with BatchNorm folded into the convolutions (:func:`fast_forward`).
With a frozen stem the teacher's input is the cached stem output, so teacher and student
share the cached part. The teacher is part of the plugin's checkpoint state.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from strategies.model import EmbeddingNet, fold_batchnorm
from strategies.registry import StrategyConfig, StrategyPlugin


def fast_forward(model: torch.nn.Module) -> Any:
    """An inference-only forward of a frozen ``EmbeddingNet``: the trained part's BatchNorm
    layers folded into their convolutions (torch.fx) and run channels-last, which takes a
    third off a MobileNetV2 teacher's pass on CPU. Same outputs up to float rounding
    (about 1e-7); any other model, or one fx cannot trace, keeps its own forward."""
    if not isinstance(model, EmbeddingNet):
        return model
    try:
        trunk = fold_batchnorm(model.trunk, next(model.parameters()).device)
    except Exception:  # untraceable trunk: the plain forward is as correct
        return model

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3 and len(model.stem):
            x = model._stem(x)
        h = trunk(x.contiguous(memory_format=torch.channels_last))
        return F.normalize(model.embed(model.pool(h).flatten(1)), dim=1)

    return forward


class TeacherPlugin(StrategyPlugin, SupervisedPlugin):
    """Base of plugins that distill from the previous experience's model."""

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.teacher: torch.nn.Module | None = None
        self._pending_state: dict[str, Any] | None = None
        self._memo: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fast: Any = None

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.teacher = self._freeze(copy.deepcopy(strategy.model))
        self._memo = None
        self._fast = None

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if self._pending_state is not None:  # restored from a checkpoint
            teacher = copy.deepcopy(strategy.model)
            teacher.load_state_dict(self._pending_state)
            self.teacher = self._freeze(teacher)
            self._pending_state = None
            self._fast = None
        self.freeze_student_bn(strategy)

    def freeze_student_bn(self, strategy: Any) -> None:
        """With the config's ``freeze_student_bn`` (fecd, dkd), freeze the student's
        BatchNorm statistics from the second experience on (DESIGN.md, "Model": the
        thesis default); a strategy whose Config has no such switch is left alone."""
        if (getattr(self.config, "freeze_student_bn", False)
                and strategy.experience.current_experience >= 1
                and hasattr(strategy.model, "freeze_bn")):
            strategy.model.freeze_bn = True
            strategy.model.train()

    @staticmethod
    def _freeze(model: torch.nn.Module) -> torch.nn.Module:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def teacher_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's (normalised) embeddings of ``x``; computed once per batch tensor."""
        assert self.teacher is not None
        if self._memo is not None and self._memo[0] is x:
            return self._memo[1]
        if self._fast is None:
            self._fast = fast_forward(self.teacher)
        with torch.inference_mode():
            f_t = self._fast(x)
        f_t = f_t.clone()  # a normal tensor: autograd may save it for the student's backward
        self._memo = (x, f_t)
        return f_t

    def state_dict(self) -> dict[str, Any]:
        teacher = self.teacher.state_dict() if self.teacher is not None else self._pending_state
        return {"teacher": teacher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher = None
        self._pending_state = state["teacher"]
