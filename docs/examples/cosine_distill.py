"""Cosine-embedding distillation: a complete strategy plugin in one file.

Drop a file like this into ``strategies/`` (it registers by being there), or ship it in
your own package with an entry point in the ``lrbench.strategies`` group.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from strategies import StrategyConfig, register_strategy
from strategies.teacher import TeacherPlugin


@register_strategy("cosine_distill")
class CosineDistill(TeacherPlugin):
    """Cosine distillation: lam * mean_i (1 - cos(f_s(x_i), f_t(x_i))) to the previous model."""

    regularizer = True  # the contract kit checks that its term is active from experience 2

    class Config(StrategyConfig):
        lam: float = Field(5.0, ge=0, description="weight of the distillation term")

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self.teacher is None:  # first experience: nothing to distill from
            return
        f_t = self.teacher_embed(strategy.mb_x)  # frozen previous model, no gradients
        cos = (strategy.mb_output * f_t).sum(dim=1)  # embeddings are L2-normalised
        strategy.add_loss("cosine_distill", self.config.lam * (1 - cos).mean())
