"""``l2_kd``: feature distillation to the previous model."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from strategies.registry import LogUniform, StrategyConfig, register_strategy
from strategies.teacher import TeacherPlugin


@register_strategy("l2_kd")
class L2KD(TeacherPlugin):
    """L2 feature distillation: lam * mean_i ||f_s(x_i) - f_t(x_i)||^2 on new images."""

    regularizer = True
    #: no teacher, importances or buffer yet: the first loop is finetune's (kit-checked)
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        lam: float = Field(1.0, ge=0, description="weight of the distillation term")

    #: searched by ``lrbench tune``
    tunable = {"lam": LogUniform(0.01, 100.0)}
    #: its weight acts through the teacher, which the first experience does not have
    inactive_in_first_experience = frozenset({"lam"})

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self.teacher is None:
            return
        f_t = self.teacher_embed(strategy.mb_x)
        loss = (strategy.mb_output - f_t).pow(2).sum(dim=1).mean()
        strategy.add_loss("l2_kd", self.config.lam * loss)
