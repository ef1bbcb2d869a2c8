"""``er_aml``: ER with an asymmetric metric-learning loss (Caccia et al., ICLR 2022)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from strategies.buffers import (
    BufferStrategy,
    ExemplarMemory,
    Selection,
    StoredItems,
    stack_items,
    student_forward,
)
from strategies.registry import (
    Callbacks,
    LogUniform,
    StrategyConfig,
    StrategyPlugin,
    register_strategy,
)


def supervised_contrastive(f: torch.Tensor, y: torch.Tensor, temperature: float = 0.15,
                           base_temperature: float = 0.07) -> torch.Tensor:
    """The supervised contrastive loss of every item of a batch against the others.

    With s_ij = f_i . f_j / T on L2-normalised ``f`` and C_i the batch without i:
    l_i = -(T / T_base) mean_{p in C_i, y_p = y_i} log( exp(s_ip) / sum_{a in C_i} exp(s_ia) ),
    averaged over the anchors that have a positive (AML's ``sup_con_loss`` with each
    anchor's contrast set being the rest of the batch).
    """
    f = F.normalize(f, dim=1)
    n = len(y)
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    s = (f @ f.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = s - torch.logsumexp(s, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    count = pos.sum(dim=1)
    mean_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1) \
        / count.clamp(min=1)
    has = count > 0
    if not bool(has.any()):
        return f.sum() * 0.0
    return -(temperature / base_temperature) * mean_pos[has].mean()


@register_strategy("er_aml")
class ERAML(BufferStrategy, StrategyPlugin, Callbacks):
    """ER-AML: new classes learn only against each other; the buffer gets the normal loss.

    From the second experience on the loss of a step is
    L = SupCon(current batch: anchors, positives and negatives all of the current
    experience's classes) + replay_weight * L_metric(a P x K batch drawn from the exemplar
    memory together with the current experience's images). The first experience trains
    with L_metric alone, as AML trains its first task with cross-entropy. The memory is the
    class-balanced one of :mod:`strategies.buffers` (``selection``), filled at the end of
    each experience.
    """

    regularizer = True
    #: no teacher, importances or buffer yet: the first loop is finetune's (kit-checked)
    first_loop_as = "finetune"

    class Config(StrategyConfig):
        mem_size: int = Field(500, ge=1, description="total number of stored images")
        temperature: float = Field(0.15, gt=0, description="SupCon temperature T")
        base_temperature: float = Field(0.07, gt=0, description="SupCon base temperature "
                                        "(the loss is scaled by T / T_base)")
        replay_weight: float = Field(1.0, ge=0, description="weight of the metric loss on "
                                     "the rehearsal batch")
        selection: Selection = Field(
            "random", description="how new classes' exemplars are chosen: random, herding "
            "(iCaRL, on L2-normalised embeddings) or closest_to_centre")
        seed: int = Field(0, ge=0, le=2**32 - 1,
                          description="seed of the exemplar selection and the draws")

    #: searched by ``lrbench tune``
    tunable = {"temperature": LogUniform(0.02, 1.0), "replay_weight": LogUniform(0.1, 10.0)}
    #: its loss acts from the second experience on (the first trains with L_metric alone)
    inactive_in_first_experience = frozenset({"temperature", "base_temperature",
                                              "replay_weight"})

    def __init__(self, config: StrategyConfig | None = None) -> None:
        super().__init__(config)
        self.memory = ExemplarMemory(self.config.mem_size, self.config.selection,
                                     self.config.seed)
        self._items: StoredItems | None = None
        self._order: list[int] = []
        self._step = 0

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self._items, self._order, self._step = None, [], 0
        if not len(self.memory):
            return
        from strategies.template import pk_order

        exp = strategy.experience
        e = int(exp.current_experience)
        # AML's buffer holds the current task's examples too: the rehearsal batch is drawn
        # from the memory and the current experience's images together
        pairs = self.memory.items() + [(e, i) for i in range(len(exp.dataset))]
        self._items = StoredItems(exp.origin_stream, pairs)
        batch = strategy.p * strategy.k
        steps = strategy.steps_for(len(exp.dataset))
        self._order = pk_order(self._items.targets(), strategy.p, strategy.k,
                               seed=self.config.seed * 100_003 + 7 * e + 1,
                               length=steps * batch)

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self._items is None:
            return
        size = len(strategy.mb_y)
        pick = self._order[self._step * size:(self._step + 1) * size]
        self._step += 1
        x, y = stack_items(self._items, pick, strategy.device)
        replay = strategy._criterion(student_forward(strategy, x), y)
        incoming = supervised_contrastive(strategy.mb_output, strategy.mb_y,
                                          self.config.temperature,
                                          self.config.base_temperature)
        # the incoming batch's loss is SupCon, not the metric loss the template computed
        strategy.loss = torch.zeros((), device=strategy.mb_output.device)
        strategy.loss_terms = {}
        strategy.add_loss("aml_incoming", incoming)
        strategy.add_loss("aml_replay", self.config.replay_weight * replay)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self._items, self._order = None, []
        self.memory.update(strategy)

    def state_dict(self) -> dict[str, Any]:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state)
