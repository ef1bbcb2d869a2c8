"""``bct``: backward-compatible training (Shen et al., CVPR 2020) toward the previous model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from strategies.registry import LogUniform, StrategyConfig, register_strategy
from strategies.teacher import TeacherPlugin, fast_forward


def synthesised_classifier(features: torch.Tensor, labels: torch.Tensor,
                           rows: int) -> torch.Tensor:
    """openBCT's ``ClassifierGenerator``: row c is the mean of the features of class c's
    images (zeros for a class without images), ``rows`` x d."""
    labels = labels.long().reshape(-1)
    out = torch.zeros(rows, features.shape[1], dtype=features.dtype, device=features.device)
    counts = torch.zeros(rows, dtype=features.dtype, device=features.device)
    out.index_add_(0, labels, features)
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=features.dtype))
    return out / counts.clamp(min=1)[:, None]


def influence_loss(features: torch.Tensor, old_classifier: torch.Tensor, labels: torch.Tensor,
                   scale: float = 20.0, cosine: bool = True) -> torch.Tensor:
    """BCT's influence loss: cross-entropy of the new model's ``features`` under the
    frozen old classifier, ``CE(W_old phi_new(x), y)`` averaged over the batch. ``cosine``
    (lrbench's classifier): the logits are ``scale . normalize(W_old) normalize(f)``;
    without it they are ``W_old f``, openBCT's linear ``old_fc`` (no bias)."""
    if cosine:
        logits = scale * F.normalize(features, dim=1) @ F.normalize(old_classifier, dim=1).T
    else:
        logits = features @ old_classifier.T
    return F.cross_entropy(logits, labels)


@register_strategy("bct")
class BCT(TeacherPlugin):
    """BCT: the new model's features trained to fit the previous model's classifier too.

    From the second experience: ``lam CE(s . normalize(W_old) f_new, y)``, W_old frozen:
    the previous model's cosine-classifier rows for the classes it knew, and for the
    current experience's classes openBCT's synthesised rows (the mean of the previous
    model's embeddings of each class's train images). The model also learns the current
    classes with its own classifier (CE, ``ce_weight``) next to the metric loss. The
    target is the model after the previous experience (t - 1)."""

    needs_classifier = True
    regularizer = True

    class Config(StrategyConfig):
        lam: float = Field(1.0, ge=0, description="weight of the influence loss (openBCT "
                           "adds it with weight 1)")
        ce_weight: float = Field(1.0, ge=0, description="weight of the new classifier's CE")

    #: searched by ``lrbench tune``
    tunable = {"lam": LogUniform(0.1, 10.0)}
    #: the influence loss needs a previous model (ce_weight trains from the first experience)
    inactive_in_first_experience = frozenset({"lam"})

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        #: the frozen old classifier of the experience under way (None in the first)
        self.old_classifier: torch.Tensor | None = None

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        super().before_training_exp(strategy, **kwargs)  # the teacher, restored if resumed
        self.old_classifier = None
        if self.teacher is not None:
            self.old_classifier = self.build_old_classifier(strategy)

    def build_old_classifier(self, strategy: Any) -> torch.Tensor:
        """W_old: the teacher's classifier rows, and for the classes of the current
        experience the mean of the teacher's embeddings of their train images (evaluation
        transform, no augmentation), as openBCT's ``ClassifierGenerator`` builds them."""
        from strategies.buffers import evaluation_items, stack_items

        assert self.teacher is not None
        items = evaluation_items(strategy.experience)
        size = int(getattr(strategy, "eval_mb_size", None) or 128)
        forward = fast_forward(self.teacher)
        feats, labels = [], []
        with torch.inference_mode():
            for a in range(0, len(items), size):
                x, y = stack_items(items, range(a, min(a + size, len(items))), strategy.device)
                feats.append(forward(x).float().clone())
                labels.append(y)
        f, y = torch.cat(feats), torch.cat(labels)
        old = self.teacher.classifier.weight.detach().float()
        rows = max(old.shape[0], int(y.max()) + 1)
        w = torch.zeros(rows, old.shape[1], device=old.device)
        w[:old.shape[0]] = old
        new_classes = torch.unique(y)
        w[new_classes] = synthesised_classifier(f, y, rows)[new_classes].to(w.device)
        return w

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        cfg = self.config
        model = strategy.model
        if cfg.ce_weight:
            strategy.add_loss("ce", cfg.ce_weight * F.cross_entropy(
                model.logits(strategy.mb_output), strategy.mb_y))
        if self.old_classifier is not None:
            strategy.add_loss("bct", cfg.lam * influence_loss(
                strategy.mb_output, self.old_classifier, strategy.mb_y,
                model.classifier.scale))
