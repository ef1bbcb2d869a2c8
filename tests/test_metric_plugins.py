"""The Avalanche plugin metric produces full R matrices during a real (short) run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.datasets import SynthFG
from benchmarks.streams import class_incremental
from benchmarks.transforms import retrieval_transforms
from metrics import evaluate_retrieval, forgetting


class TinyEmbedder(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=1)


def _stream():
    kw = {"num_classes": 9, "train_per_class": 8, "test_per_class": 5}
    train = SynthFG(split="train", transform=retrieval_transforms(32, False, True), **kw)
    test = SynthFG(split="test", transform=retrieval_transforms(32, False, True), **kw)
    return class_incremental((train, test), "3+3+3")


def test_naive_run_fills_the_r_matrix():
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin
    from pytorch_metric_learning.losses import ContrastiveLoss

    from metrics import RetrievalMetrics

    torch.manual_seed(0)
    bench = _stream()
    metric = RetrievalMetrics(ks=(1, 2, 4), cross_model=True)
    model = TinyEmbedder()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                     criterion=ContrastiveLoss(), train_mb_size=12, train_epochs=1,
                     eval_mb_size=16, device="cpu",
                     evaluator=EvaluationPlugin(metric, loggers=[]))
    logged = {}
    for exp in bench.train_stream:
        strategy.train(exp)
        logged.update(strategy.eval(bench.test_stream))
    r = metric.r_matrix(1)
    assert r.shape == (3, 3) and np.isfinite(r).all()  # full, zero-shot entries included
    assert np.isfinite(metric.r_matrix(metric="map_at_r")).all()
    seen = metric.seen_curve(1)
    assert np.isfinite(seen).all()
    cross = metric.cross_model_matrix(1)
    assert np.isfinite(cross[np.tril_indices(3, -1)]).all() and np.isnan(np.diag(cross)).all()
    # forgetting may be negative (a task can improve); it is computed from this matrix
    expected = np.mean([r[j:2, j].max() - r[2, j] for j in range(2)])
    assert forgetting(r)["forgetting"] == pytest.approx(expected)
    # logged under Avalanche's naming scheme
    assert "Recall@1/eval_phase/test_stream/Exp002" in logged
    assert "Recall@4_seen/eval_phase/test_stream/seen" in logged
    assert logged["Recall@1/eval_phase/test_stream/Exp002"] == r[2, 2]
    # the last row equals a direct evaluation of the final model
    model.eval()
    with torch.no_grad():
        for j, exp in enumerate(bench.test_stream):
            xs, ys = zip(*[(x, y) for x, y, _ in exp.dataset], strict=True)
            emb = model(torch.stack(xs))
            direct = evaluate_retrieval(emb, torch.tensor(ys), (1, 2, 4)).recall
            assert r[2, j] == pytest.approx(direct[1])


def test_state_dict_round_trip():
    from metrics import RetrievalMetrics

    m = RetrievalMetrics()
    m.trained_exp = 1
    m.per_exp[(1, 0)] = evaluate_retrieval(torch.eye(4), [0, 0, 1, 1])
    other = RetrievalMetrics()
    other.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(other.r_matrix(1), m.r_matrix(1))
    with pytest.raises(ValueError):
        RetrievalMetrics(ks=(0,))
