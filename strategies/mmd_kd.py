"""``mmd_kd`` (BMVC 2020): old-class logit distillation plus MMD between feature sets."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from strategies.losses import mmd
from strategies.lwf import classifier_terms
from strategies.registry import LogUniform, StrategyConfig, register_strategy
from strategies.teacher import TeacherPlugin


@register_strategy("mmd_kd")
class MMDKD(TeacherPlugin):
    """MMD + KD (BMVC 2020): old-class logit KD (T = 2) plus MMD^2 of student vs teacher features.

    Loss on top of the metric loss, from the second experience:
    ``lambda_kd T^2 KL(p_t_old || p_s_old) + lambda_mmd MMD^2_k(F_s, F_t)`` with a Gaussian
    kernel, on the new images; the cosine classifier learns the current classes by CE.
    """

    needs_classifier = True
    regularizer = True

    class Config(StrategyConfig):
        lambda_kd: float = Field(1.0, ge=0, description="weight of the logit distillation")
        lambda_mmd: float = Field(1.0, ge=0, description="weight of the MMD term")
        temperature: float = Field(2.0, gt=0, description="softmax temperature T of the KD")
        sigma: float = Field(1.0, gt=0, description="Gaussian kernel bandwidth of the MMD")
        ce_weight: float = Field(
            0.1, ge=0, description="weight of the classifier's CE (chosen on a validation "
            "split: docs/results/superseded/thesis-cub-subset-val.md)")

    #: searched by ``lrbench tune``
    tunable = {"lambda_kd": LogUniform(0.1, 10.0), "lambda_mmd": LogUniform(0.1, 100.0)}
    #: the distillation terms' (ce_weight trains the classifier from the first
    #: experience)
    inactive_in_first_experience = frozenset({"lambda_kd", "lambda_mmd", "temperature",
                                              "sigma"})

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        cfg = self.config
        kd = classifier_terms(strategy, self, cfg.temperature, cfg.ce_weight)
        if kd is None:
            return
        strategy.add_loss("kd", cfg.lambda_kd * kd)
        f_t = self.teacher_embed(strategy.mb_x)  # the pass classifier_terms made, kept
        strategy.add_loss("mmd", cfg.lambda_mmd * mmd(strategy.mb_output, f_t, (cfg.sigma,)))
