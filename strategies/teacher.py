"""Shared machinery of distillation strategies: the frozen teacher.

Teacher = a frozen copy of the model after the previous experience, in eval mode
(DESIGN.md, "Strategies"). Its forward passes run under ``torch.inference_mode`` (no
autograd bookkeeping at all), once per batch: :meth:`TeacherPlugin.teacher_embed` keeps the
last batch's embeddings, so terms that need them (LwF's logits, MMD, ...) share one pass,
and that pass runs with BatchNorm folded into the convolutions (the model's own
``inference_forward``).
With a frozen stem the teacher's input is the cached stem output, so teacher and student
share the cached part. The teacher is part of the plugin's checkpoint state.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from strategies.registry import Callbacks, StrategyConfig, StrategyPlugin


def fast_forward(model: torch.nn.Module) -> Any:
    """The frozen teacher's forward: the model's own inference forward when it offers one
    (``EmbeddingNet.inference_forward``: BatchNorm folded, channels-last), else the model."""
    make = getattr(model, "inference_forward", None)
    return make() if callable(make) else model


class TeacherPlugin(StrategyPlugin, Callbacks):
    """Base of plugins that distill from the previous experience's model."""

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.teacher: torch.nn.Module | None = None
        self._pending_state: dict[str, Any] | None = None
        self._memo: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fast: Any = None

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.teacher = self._freeze(copy.deepcopy(strategy.model))
        # a state loaded during the experience (a shared training loop) is superseded: the
        # next experience must not roll the teacher back to it
        self._pending_state = None
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
