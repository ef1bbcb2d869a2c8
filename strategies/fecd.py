"""``fecd`` (TMM 2021): correlation distillation with feature estimation of earlier models."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from strategies.losses import correlation_distillation
from strategies.registry import LogUniform, StrategyConfig, register_strategy
from strategies.teacher import TeacherPlugin


def estimate_features(f_t: torch.Tensor, low: float, high: float, scale: float) -> torch.Tensor:
    """An earlier model's features, estimated: normalize(F_t + s (U * F_t)), U ~ U(low, high)."""
    u = torch.rand_like(f_t) * (high - low) + low
    return F.normalize(f_t + scale * u * f_t, dim=1)


@register_strategy("fecd")
class FECD(TeacherPlugin):
    """FECD (TMM 2021): correlation distillation to the previous and estimated earlier models.

    From the second experience: ``lam L_corr(F_s, F_t)`` (T = 4, lambda = 10). From the
    third: plus ``lambda_est mean_m L_corr(F_s, F^_m)`` over the m = 1..(i - 1) models
    before the teacher, which are not stored but estimated from the teacher's features with
    fresh uniform noise per batch (defaults from the reference implementation).

    Ablations: ``estimation: teacher`` puts the same weight ``lambda_est`` on the plain
    teacher term instead (does the estimation help, or only the extra weight?);
    ``estimation: none`` (or ``lambda_est: 0``) drops the term; ``freeze_student_bn``
    freezes the student's BatchNorm statistics (:class:`~strategies.teacher.TeacherPlugin`).
    """

    regularizer = True
    #: no teacher, importances or buffer yet: the first loop is finetune's (kit-checked)
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        lam: float = Field(10.0, ge=0, description="weight of L_corr to the teacher")
        temperature: float = Field(4.0, gt=0, description="temperature T of L_corr")
        lambda_est: float = Field(10.0, ge=0, description="weight of the estimated models' term")
        est_low: float = Field(-0.0443, description="lower bound a of the noise U")
        est_high: float = Field(0.2230, description="upper bound b of the noise U")
        est_scale: float = Field(1.0, ge=0, description="scale s of the estimation noise")
        direction: Literal["teacher_to_student", "student_to_teacher"] = Field(
            "teacher_to_student", description="which distribution is the KL's target")
        freeze_student_bn: bool = Field(
            False, description="freeze the student's BatchNorm statistics from experience 2")
        #: added with the ablations; at "noise" fecd computes what it did before
        hash_omits_default: ClassVar[frozenset[str]] = frozenset({"estimation"})

        estimation: Literal["noise", "teacher", "none"] = Field(
            "noise", description="the estimated models' term: estimated by noise (the "
            "method), replaced by the same weight on the plain teacher term, or left out "
            "(ablations)")

    #: searched by ``lrbench tune``
    tunable = {"lam": LogUniform(1.0, 100.0), "lambda_est": LogUniform(0.1, 100.0)}
    #: all of them act through the teacher, which the first experience does not have (a
    #: field added to Config joins them: the contract kit checks that it may)
    inactive_in_first_experience = frozenset(Config.model_fields)

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self.teacher is None:
            return
        cfg = self.config
        f_s = strategy.mb_output
        f_t = self.teacher_embed(strategy.mb_x)
        corr = correlation_distillation(f_s, f_t, cfg.temperature, cfg.direction)
        strategy.add_loss("corr", cfg.lam * corr)
        n_estimated = int(strategy.experience.current_experience) - 1
        if n_estimated <= 0 or not cfg.lambda_est or cfg.estimation == "none":
            return
        if cfg.estimation == "teacher":
            # the ablation: the estimated models' term with F^_m = F_t, i.e. the same
            # weight lambda_est on the plain teacher term (the mean of n_estimated equal
            # terms is that term): what the estimation adds beyond more teacher weight
            strategy.add_loss("estimation", cfg.lambda_est * corr)
        else:
            est = torch.stack([correlation_distillation(
                f_s, estimate_features(f_t, cfg.est_low, cfg.est_high, cfg.est_scale),
                cfg.temperature, cfg.direction) for _ in range(n_estimated)]).mean()
            strategy.add_loss("estimation", cfg.lambda_est * est)
