"""P x K batches: P classes of K images each, drawn by pytorch-metric-learning's MPerClassSampler
from a seeded order, the same every run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_common


class PKSampler(MPerClassSampler):
    """``MPerClassSampler`` with its own seeded random state (not NumPy's global one)."""

    def __init__(self, labels: Sequence[int], p: int, k: int, length: int, seed: int) -> None:
        super().__init__(np.asarray(labels), m=k, batch_size=p * k,
                         length_before_new_iter=max(length, p * k))
        self.rng = np.random.RandomState(seed)

    def __iter__(self):
        saved = pml_common.NUMPY_RANDOM
        pml_common.NUMPY_RANDOM = self.rng
        try:
            return super().__iter__()
        finally:
            pml_common.NUMPY_RANDOM = saved


def pk_order(targets: Sequence[int], p: int, k: int, seed: int,
             length: int | None = None) -> list[int]:
    """Indices drawn by the P x K sampler (:class:`PKSampler`), batch after batch.

    An unshuffled pass in batches of ``p * k`` over the items in this order sees P x K
    batches: what a pass outside the training loop (an importance estimate) needs when the
    dataset is stored class by class and a plain pass would give one-class batches.
    ``length`` (items) defaults to one pass over ``targets``, rounded up to whole batches;
    P is lowered to the number of classes when there are fewer. ``seed`` seeds the
    sampler's own random state (NumPy's global one is not touched).
    """
    labels = [int(t) for t in targets]
    p = max(1, min(p, len(set(labels))))
    batch = p * k
    length = len(labels) if length is None else length
    length = max(batch, -(-length // batch) * batch)
    return [int(i) for i in PKSampler(labels, p, k, length, seed)]
