"""``lwf``: Learning without Forgetting on the cosine classifier's old-class logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from strategies.registry import LogUniform, StrategyConfig, register_strategy
from strategies.teacher import TeacherPlugin


def kd_loss(z_s: torch.Tensor, z_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(z_t/T) || softmax(z_s/T)), averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(z_s / t, dim=1), F.softmax(z_t / t, dim=1),
                    reduction="batchmean") * t * t


@register_strategy("lwf")
class LwF(TeacherPlugin):
    """LwF: distill old-class cosine logits of the previous model on new images (T = 2).

    The model gets a cosine classifier; it learns the current classes by cross-entropy
    (``ce_weight``) next to the metric loss, and from the second experience on the
    student's old-class logits follow the teacher's: ``lam * T^2 KL(p_t || p_s)``.
    """

    needs_classifier = True
    regularizer = True

    class Config(StrategyConfig):
        lam: float = Field(1.0, ge=0, description="weight of the distillation term")
        temperature: float = Field(2.0, gt=0, description="softmax temperature T")
        ce_weight: float = Field(1.0, ge=0, description="weight of the classifier's CE")

    #: searched by ``lrbench tune`` (DESIGN.md default T = 2 stays fixed)
    tunable = {"lam": LogUniform(0.1, 100.0)}
    #: the distillation term's (ce_weight trains the classifier from the first experience)
    inactive_in_first_experience = frozenset({"lam", "temperature"})

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        cfg = self.config
        kd = classifier_terms(strategy, self, cfg.temperature, cfg.ce_weight)
        if kd is not None:
            strategy.add_loss("lwf", cfg.lam * kd)


def classifier_terms(strategy: Any, plugin: TeacherPlugin, temperature: float,
                     ce_weight: float) -> torch.Tensor | None:
    """Train the cosine classifier on the current labels (CE, logged as ``ce``) and return
    the old-class logit distillation to ``plugin``'s teacher (None before there is one).
    The teacher's embeddings come from :meth:`TeacherPlugin.teacher_embed`: one pass per
    batch, shared with any other term of the plugin."""
    z_s = strategy.model.logits(strategy.mb_output)
    if ce_weight:
        strategy.add_loss("ce", ce_weight * F.cross_entropy(z_s, strategy.mb_y))
    if plugin.teacher is None:
        return None
    n_old = plugin.teacher.classifier.num_classes
    with torch.no_grad():
        z_t = plugin.teacher.logits(plugin.teacher_embed(strategy.mb_x))[:, :n_old]
    return kd_loss(z_s[:, :n_old], z_t, temperature)
