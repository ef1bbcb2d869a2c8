"""The untrained reference and first-session adaptation (``pretrained``, ``first_session``)
and the slow-learner option (``training.trunk_lr_mult``)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.contract import build_template, check_strategy, frozen_states, tiny_stream
from benchmarks.contract import first_difference as diff_of


def test_first_session_model_is_bit_identical_after_every_later_experience():
    """Weights and BatchNorm running statistics after experience 0 stay bit for bit what
    they are after experiences 1 and 2; the first experience did train."""
    states = frozen_states("first_session", None, 0, 6, "small_cnn", tiny_stream())
    assert diff_of(states[0], states[1], "model") is not None  # experience 0 trained
    assert any("running_mean" in k for k in states[1])  # BN statistics are compared too
    for later in states[2:]:
        assert diff_of(states[1], later, "model") is None


def test_first_session_trains_the_first_experience_like_finetune():
    """Up to the end of experience 0 it is fine-tuning: same losses, same R matrix row."""
    bench = tiny_stream()
    a = build_template("first_session")  # each built (seeded) just before it runs: the
    a.run(bench, stop_after=1)           # run draws from the global RNG
    b = build_template("finetune")
    b.run(bench, stop_after=1)
    assert a.loss_history == b.loss_history
    assert (a.metrics.r_matrix(1)[0] == b.metrics.r_matrix(1)[0]).all()


def test_pretrained_embeds_the_pooled_trunk_features_and_never_trains():
    """No projection: the embedding is normalize(pool(trunk(x))) of the initial trunk, in
    the trunk's own dimension (128 channels for the small CNN, not model.dim = 32); no
    training step runs and the R matrix's rows for a fixed model agree column by column."""
    tpl = build_template("pretrained")
    model = tpl.model
    assert isinstance(model.embed, torch.nn.Identity) and model.dim == 128
    x = torch.randn(5, 3, 32, 32)
    model.eval()
    expected = torch.nn.functional.normalize(model.pool(model.trunk(x)).flatten(1), dim=1)
    assert torch.allclose(model(x), expected)
    tpl.run(tiny_stream())
    assert tpl.loss_history == []
    r = tpl.metrics.r_matrix(1)
    assert (r == r[0]).all()  # the same model after every experience


def test_contract_kit_catches_a_strategy_that_trains_when_declared_frozen(monkeypatch):
    """A strategy declaring trains_experiences = 1 whose later experiences do train fails
    the kit (here: the template's stop disabled)."""
    from strategies.template import RetrievalTemplate

    monkeypatch.setattr(RetrievalTemplate, "trains_now", lambda self: True)
    with pytest.raises(AssertionError, match="trained in experiences"):
        check_strategy("first_session")


def _groups(**training):
    from benchmarks.config import TrainingSpec
    from benchmarks.run.cell import make_optimizer
    from strategies.model import EmbeddingNet

    model = EmbeddingNet("small_cnn", dim=16, classifier=True, frozen_stages=1)
    tr = TrainingSpec(lr=0.01, **training)
    return model, make_optimizer(model, None, tr)


def test_trunk_lr_mult_gives_the_trunk_its_own_learning_rate():
    model, opt = _groups(trunk_lr_mult=0.1)
    head, trunk = opt.param_groups
    assert head["lr"] == 0.01 and trunk["lr"] == pytest.approx(0.001)
    trained_trunk = {id(p) for p in model.trunk.parameters()}
    assert {id(p) for p in trunk["params"]} == trained_trunk
    # the head group: every other parameter, the frozen stem's too (Avalanche maps each
    # model parameter to a group; they have no gradient, so nothing updates them)
    assert {id(p) for p in head["params"]} == {
        id(p) for n, p in model.named_parameters() if not n.startswith("trunk.")}
    assert not any(id(p) in trained_trunk for p in head["params"])


def test_a_slow_trunk_trains_through_avalanche_with_a_frozen_stem():
    """A cell with a frozen stem and trunk_lr_mult 0.1 trains two experiences (Avalanche
    re-maps the groups at each), the trunk at a tenth of the learning rate, the stem
    unchanged."""
    from benchmarks.contract import tiny_cell
    from benchmarks.run.cell import build_cell

    cell = tiny_cell("lwf")
    cell = cell.model_copy(update={
        "model": cell.model.model_copy(update={"frozen_stages": 1}),
        "training": cell.training.model_copy(update={"trunk_lr_mult": 0.1})})
    built = build_cell(cell)
    stem = {k: v.clone() for k, v in built.template.model.stem.state_dict().items()}
    built.template.run(built.benchmark, stop_after=2)
    head, trunk = built.template.optimizer.param_groups
    assert trunk["lr"] == pytest.approx(0.001) and head["lr"] == 0.01
    assert {id(p) for p in trunk["params"]} == {
        id(p) for p in built.template.model.trunk.parameters()}
    for k, v in built.template.model.stem.state_dict().items():
        assert torch.equal(v, stem[k])


def test_trunk_lr_mult_of_one_is_a_single_group():
    """At its default there is one parameter group, as before the option: the numbers of
    stores written before it are unchanged (it is left out of the cell hash there)."""
    from benchmarks.config import TrainingSpec

    _, opt = _groups()
    assert len(opt.param_groups) == 1
    assert "trunk_lr_mult" not in TrainingSpec().hashed_dump()
    assert TrainingSpec(trunk_lr_mult=0.1).hashed_dump()["trunk_lr_mult"] == 0.1


def test_a_grown_classifier_joins_the_head_group():
    """Avalanche adds a grown classifier's new parameter to the group of the parameter it
    replaces: the head's, never the slow trunk's."""
    tpl = build_template("lwf", hparams=None)
    from benchmarks.run.cell import make_optimizer

    tr = type("T", (), {"trunk_lr_mult": 0.1, "lr": 0.01, "optimizer": "adam",
                        "weight_decay": 0.0, "momentum": 0.9})()
    tpl.optimizer = make_optimizer(tpl.model, tpl._criterion, tr)
    bench = tiny_stream()
    tpl.run(bench, stop_after=2)
    head, trunk = tpl.optimizer.param_groups
    w = tpl.model.classifier.weight
    assert w.shape[0] == 8 and any(p is w for p in head["params"])
    assert not any(p is w for p in trunk["params"])
    assert trunk["lr"] == pytest.approx(0.001) and head["lr"] == 0.01
