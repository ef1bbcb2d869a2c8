"""The retrieval template: P x K batches, budgets, loss bookkeeping, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.contract import build_template, tiny_stream
from strategies.template import PKSampler


def test_pk_sampler_batches_are_p_classes_by_k_images_and_seeded():
    labels = np.repeat(np.arange(6), 5)
    a = list(PKSampler(labels, p=3, k=2, length=24, seed=1))
    b = list(PKSampler(labels, p=3, k=2, length=24, seed=1))
    c = list(PKSampler(labels, p=3, k=2, length=24, seed=2))
    assert a == b and a != c and len(a) == 24
    for start in range(0, 24, 6):
        batch = labels[a[start:start + 6]]
        classes, counts = np.unique(batch, return_counts=True)
        assert len(classes) == 3 and (counts == 2).all()
    # NumPy's global random state is left alone
    state = np.random.get_state()[1].copy()
    list(PKSampler(labels, p=3, k=2, length=24, seed=3))
    assert np.array_equal(np.random.get_state()[1], state)


def test_iteration_budget_and_loss_terms_are_logged():
    bench = tiny_stream()
    tpl = build_template("l2_kd", iterations=4)
    tpl.run(bench, stop_after=2)
    assert len(tpl.loss_history) == 8
    first, later = tpl.loss_history[0], tpl.loss_history[-1]
    assert set(first) == {"experience", "total", "metric"}
    assert later["total"] == pytest.approx(later["metric"] + later["l2_kd"], rel=1e-5)


def test_epoch_budget():
    bench = tiny_stream()
    tpl = build_template("finetune", iterations=4)
    tpl.iterations, tpl.epochs = None, 2.0  # 2 passes over 40 images, 12 per batch -> 7
    tpl.train(bench.train_stream[0])
    assert len(tpl.loss_history) == 7


def test_p_larger_than_the_experience_is_an_error():
    bench = tiny_stream()
    tpl = build_template("finetune")
    tpl.p = 5  # experiences hold 4 classes
    with pytest.raises(ValueError, match="fewer than P = 5"):
        tpl.train(bench.train_stream[0])
    with pytest.raises(ValueError, match="exactly one budget"):
        type(tpl)(model=tpl.model, optimizer=tpl.optimizer, iterations=None, epochs=None)


@pytest.mark.parametrize(("channels_last", "trunk_lr_mult"),
                         [(False, 1.0), (True, 1.0), (False, 0.1)])
def test_mid_stream_resume_equals_uninterrupted_run_with_classifier_growth(
        tmp_path, channels_last, trunk_lr_mult):
    """LwF: a teacher, a growing classifier; checkpoint after the second of 3 experiences;
    in the default layout and channels-last (the real-data configs' CPU setting), and
    with a slow trunk (two parameter groups: the resumed model's grown classifier is a
    parameter Avalanche has never mapped, and must join the head's group)."""
    from benchmarks.config import TrainingSpec
    from benchmarks.run.cell import make_optimizer

    def template(**kwargs):
        tpl = build_template("lwf", **kwargs)
        tpl.channels_last = channels_last
        if trunk_lr_mult != 1.0:
            tr = TrainingSpec(lr=tpl.optimizer.param_groups[0]["lr"],
                              trunk_lr_mult=trunk_lr_mult)
            tpl.optimizer = make_optimizer(tpl.model, tpl._criterion, tr)
        return tpl

    bench = tiny_stream()
    full = template()
    full.run(bench)
    part = template()
    part.run(bench, checkpoint=tmp_path / "ckpt.pt", stop_after=2)
    resumed = template(seed=0)
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.experiences_done == 2 and resumed.model.classifier.num_classes == 8
    resumed.run(bench)
    np.testing.assert_array_equal(resumed.metrics.r_matrix(1), full.metrics.r_matrix(1))
    np.testing.assert_array_equal(resumed.metrics.seen_curve(1), full.metrics.seen_curve(1))
    assert resumed.model.classifier.num_classes == 12
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    conv = next(m for m in resumed.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
