"""The rehearsal strategies (``der``, ``er_aml``, ``replay``'s selection rules) and the
statistics-only baselines (``slda``, ``ranpac``), each against a reference formula written
here (the file and commit compared with are named; no reference source is copied)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.contract import build_template, tiny_stream
from strategies import available_strategies, make_config
from strategies.buffers import (
    closest_to_centre_order,
    embed_items,
    evaluation_items,
    herding_order,
    reservoir_slot,
)


def test_the_new_strategies_are_registered():
    known = available_strategies()
    for name in ("der", "er_aml", "slda", "slda_fs", "ranpac", "ranpac_fs", "replay"):
        assert name in known
    for name in ("der", "er_aml", "replay"):
        assert "selection" in known[name].config_cls.model_fields


# -- selection rules ---------------------------------------------------------------------------
def test_herding_and_closest_to_centre_differ_on_the_issue_example():
    """1-d features {1, -1, 0.3}: mean 0.1. Herding takes 0.3, then -1 (the running mean
    of {0.3, -1} is -0.35, nearer 0.1 than 0.65), then 1; closest-to-centre takes 0.3,
    then 1 (0.9 away), then -1 (1.1 away)."""
    x = torch.tensor([[1.0], [-1.0], [0.3]])
    assert herding_order(x, normalize=False) == [2, 1, 0]
    assert closest_to_centre_order(x, normalize=False) == [2, 0, 1]


def pycil_herding(vectors: np.ndarray, m: int) -> list[int]:
    """iCaRL's herding as G-U-N/PyCIL ``models/base.py`` (commit 1655180)
    ``_construct_exemplar`` states it, written anew: on L2-normalised vectors, pick the
    vector whose addition brings the running exemplar mean nearest the class mean, remove
    it, repeat; returns the original indices."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mu = v.mean(axis=0)
    left = list(range(len(v)))
    chosen: list[int] = []
    total = np.zeros_like(mu)
    for k in range(1, m + 1):
        dists = [np.linalg.norm(mu - (v[i] + total) / k) for i in left]
        best = left[int(np.argmin(dists))]
        chosen.append(best)
        total = total + v[best]
        left.remove(best)
    return chosen


def test_herding_matches_pycil_and_avalanche():
    """On L2-normalised features the order is PyCIL's; on raw features it is Avalanche
    0.6.0's ``HerdingSelectionStrategy`` (which does not normalise), and our order on raw
    features differs from ours on normalised ones."""
    from avalanche.training.storage_policy import (
        ClosestToCenterSelectionStrategy,
        HerdingSelectionStrategy,
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)) * rng.uniform(0.2, 3.0, size=(12, 1))
    assert herding_order(torch.tensor(x)) == pycil_herding(x, 12)
    raw = torch.tensor(x, dtype=torch.float32)
    herd = object.__new__(HerdingSelectionStrategy)
    assert herding_order(raw, normalize=False) == list(
        herd.make_sorted_indices_from_features(raw))
    centre = object.__new__(ClosestToCenterSelectionStrategy)
    assert closest_to_centre_order(raw, normalize=False) == [
        int(i) for i in centre.make_sorted_indices_from_features(raw)]
    assert herding_order(raw) != herding_order(raw, normalize=False)


def test_reservoir_slot_is_mammoths_rule():
    """aimagelab/mammoth ``utils/buffer.py`` ``reservoir``: the first ``size`` items fill
    the slots in order; item n (0-based) then takes slot randint(0, n + 1) when that is
    below ``size``."""
    a, b = np.random.RandomState(3), np.random.RandomState(3)
    for n in range(40):
        expect = n if n < 7 else (lambda r: r if r < 7 else -1)(int(b.randint(0, n + 1)))
        assert reservoir_slot(n, 7, a) == expect


def test_evaluation_items_are_the_train_images_without_augmentation():
    """The stream's ``eval_views``: experience e's train images in its index order, read
    through the test transform (synth-fg: no flip), so every read gives the same tensor and
    a training read gives it or its mirror image."""
    bench = tiny_stream()
    exp = bench.train_stream[1]
    view = evaluation_items(exp)
    assert len(view) == len(exp.dataset)
    assert [int(view[i][1]) for i in range(len(view))] == [int(t) for t in exp.dataset.targets]
    for i in (0, 7, 19):
        plain = view[i][0]
        assert torch.equal(plain, view[i][0])
        trained = exp.dataset[i][0]
        assert torch.equal(trained, plain) or torch.equal(trained, plain.flip(-1))


@pytest.mark.parametrize("name", ["replay", "der", "er_aml"])
def test_herding_variants_pass_the_contract_kit(name, tmp_path):
    """``selection: herding`` on every buffer strategy trains, checkpoints and resumes
    exactly, deterministically (the kit; the defaults run in test_strategies_contract)."""
    from benchmarks.contract import check_strategy

    report = check_strategy(name, {"selection": "herding"}, tmp_path=tmp_path)
    assert "checkpoint + resume identical" in report.checks


# -- replay ----------------------------------------------------------------------------------
def test_replay_random_selection_draws_what_replay_drew_before_it_existed():
    """``selection: random`` (the default, left out of the hash) keeps the rule replay had:
    quota mem_size // #seen (at least 1), old classes cut to their first ones, each new
    class drawn with RandomState(seed * 7919 + experience).choice(its indices, quota,
    replace=False)."""
    assert "selection" not in make_config("replay").resolved()
    assert make_config("replay", {"selection": "herding"}).resolved()["selection"] == "herding"
    bench = tiny_stream()
    tpl = build_template("replay", {"mem_size": 10, "seed": 3}, iterations=2)
    tpl.run(bench, stop_after=2)
    expected: dict[int, list[tuple[int, int]]] = {}
    for e in range(2):
        targets = np.asarray([int(t) for t in bench.train_stream[e].dataset.targets])
        new = sorted(set(targets.tolist()) - set(expected))
        quota = max(1, 10 // (len(expected) + len(new)))
        expected = {c: v[:quota] for c, v in expected.items()}
        rng = np.random.RandomState(3 * 7919 + e)
        for c in new:
            idx = np.flatnonzero(targets == c)
            expected[c] = [(e, int(i)) for i in rng.choice(idx, min(quota, len(idx)),
                                                            replace=False)]
    assert tpl._strategy_plugins()[0].memory == expected


@pytest.mark.parametrize("selection", ["herding", "closest_to_centre"])
def test_replay_feature_selection_keeps_the_first_of_the_order(selection):
    """Each new class keeps the first ``quota`` images of its order over the embeddings of
    its train images (eval view) by the model at the end of the experience."""
    bench = tiny_stream()
    tpl = build_template("replay", {"mem_size": 8, "selection": selection}, iterations=2)
    tpl.run(bench, stop_after=1)
    exp = bench.train_stream[0]
    targets = np.asarray([int(t) for t in exp.dataset.targets])
    order = herding_order if selection == "herding" else closest_to_centre_order
    memory = tpl._strategy_plugins()[0].memory
    assert sorted(memory) == sorted(set(targets.tolist()))
    for c, kept in memory.items():
        idx = np.flatnonzero(targets == c)
        feats, _ = embed_items(tpl, evaluation_items(exp), idx)
        assert kept == [(0, int(idx[i])) for i in order(feats)[:2]]


# -- der -------------------------------------------------------------------------------------
def test_der_mse_is_mammoths_mse_times_the_dimension():
    """aimagelab/mammoth ``models/derpp.py`` (commit 0151ba0) weighs
    ``F.mse_loss(buf_outputs, buf_logits)``, the mean over batch AND dimensions; ours is the
    mean over the batch of the squared distance (the sum over dimensions)."""
    from strategies.der import der_mse

    f, z = torch.randn(6, 10), torch.randn(6, 10)
    reference = sum(float(((f[i] - z[i]) ** 2).sum()) for i in range(6)) / 6
    assert float(der_mse(f, z)) == pytest.approx(reference)
    assert float(der_mse(f, z)) == pytest.approx(float(F.mse_loss(f, z)) * 10)


def test_der_loss_is_the_metric_loss_plus_its_two_terms_and_its_buffer_is_a_reservoir():
    """Every step's total is L_metric + alpha MSE + beta L_metric(buffer draw) (DER++'s
    three terms; they act from the second step on, as in Mammoth where the buffer is used
    as soon as it holds anything); the reservoir has seen every drawn image once and holds
    min(mem_size, seen) slots whose labels are their images' labels."""
    bench = tiny_stream()
    tpl = build_template("der", {"mem_size": 20}, iterations=3)
    tpl.run(bench, stop_after=2)
    rows = tpl.loss_history
    assert "der_mse" not in rows[0] and "der_metric" in rows[1] and "der_mse" in rows[1]
    for row in rows:
        parts = row["metric"] + row.get("der_mse", 0.0) + row.get("der_metric", 0.0)
        assert row["total"] == pytest.approx(parts, rel=1e-5, abs=1e-6)
    der = tpl._strategy_plugins()[0]
    assert der.n_seen == 2 * 3 * tpl.p * tpl.k
    assert len(der.pairs) == 20 and der.z is not None and der.z.shape == (20, 32)
    for (e, i), label in zip(der.pairs, der.labels, strict=True):
        assert int(bench.train_stream[e].dataset.targets[i]) == label


def test_der_herding_records_outputs_at_the_end_of_the_experience():
    """With herding the buffer is the class-balanced memory; z of each exemplar is the
    trained model's embedding of its un-augmented view, recorded at the experience's end
    (the model does not change after it here, so embedding again gives z)."""
    bench = tiny_stream()
    tpl = build_template("der", {"mem_size": 8, "selection": "herding"}, iterations=2)
    tpl.run(bench, stop_after=1)
    der = tpl._strategy_plugins()[0]
    assert all("der_mse" not in row for row in tpl.loss_history)  # empty in experience 0
    assert der.pairs == der.memory.items() and len(der.pairs) == 8
    feats, _ = embed_items(tpl, evaluation_items(bench.train_stream[0]),
                           [i for _, i in der.pairs])
    assert torch.allclose(der.z, feats.float(), atol=1e-6)


def test_der_batch_prediction_matches_the_batches_drawn():
    """The buffer learns which images a batch held from the sampler's order read on a
    copy (``strategies.buffers.batch_indices``): the labels and images match every batch."""
    from strategies.buffers import batch_indices
    from strategies.registry import Callbacks

    class Record(Callbacks):
        def before_training_exp(self, strategy, **kwargs):
            self.predicted, self.seen = batch_indices(strategy), []

        def after_training_iteration(self, strategy, **kwargs):
            self.seen.append((strategy.mb_y.tolist(), strategy.mb_x.clone()))

    bench = tiny_stream()
    tpl = build_template("finetune", iterations=4)
    record = Record()
    tpl.plugins.append(record)
    tpl.run(bench, stop_after=1)
    view = evaluation_items(bench.train_stream[0])
    assert len(record.predicted) == len(record.seen) == 4
    for batch, (labels, images) in zip(record.predicted, record.seen, strict=True):
        assert [int(view[i][1]) for i in batch] == labels
        for i, image in zip(batch, images, strict=True):
            plain = view[i][0]
            assert torch.equal(image, plain) or torch.equal(image, plain.flip(-1))


# -- er_aml ----------------------------------------------------------------------------------
def aml_sup_con(anchor: torch.Tensor, anchor_y: torch.Tensor, contrast: torch.Tensor,
                contrast_y: torch.Tensor, t: float, base: float) -> torch.Tensor:
    """naderAsadi/AML ``losses.py`` (commit d526e3f) ``sup_con_loss`` for one anchor,
    written anew: -(T / T_base) * mean over the contrast items of the anchor's class of
    log softmax over all contrast items of (anchor . item / T)."""
    logits = contrast @ anchor / t
    log_prob = logits - torch.logsumexp(logits, dim=0)
    return -(t / base) * log_prob[contrast_y == anchor_y].mean()


def test_supervised_contrastive_matches_aml_with_the_batch_as_contrast_set():
    """Each anchor's contrast set is the rest of the batch (AML draws it from the buffer);
    the loss is the mean over anchors of AML's per-anchor loss."""
    from strategies.er_aml import supervised_contrastive

    torch.manual_seed(0)
    f = F.normalize(torch.randn(12, 8), dim=1)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    per_anchor = []
    for i in range(12):
        rest = torch.arange(12) != i
        per_anchor.append(aml_sup_con(f[i], y[i], f[rest], y[rest], 0.15, 0.07))
    reference = torch.stack(per_anchor).mean()
    assert float(supervised_contrastive(f, y, 0.15, 0.07)) == pytest.approx(float(reference),
                                                                          rel=1e-5)


def test_er_aml_replaces_the_incoming_loss_from_the_second_experience():
    """Experience 0: the metric loss alone. Later: SupCon on the incoming batch plus the
    metric loss on a rehearsal batch (memory + current images), nothing else."""
    tpl = build_template("er_aml", {"mem_size": 8}, iterations=2)
    tpl.run(tiny_stream(), stop_after=2)
    first = [r for r in tpl.loss_history if r["experience"] == 0]
    later = [r for r in tpl.loss_history if r["experience"] == 1]
    assert all(set(r) == {"experience", "total", "metric"} for r in first)
    for row in later:
        assert set(row) == {"experience", "total", "aml_incoming", "aml_replay"}
        assert row["total"] == pytest.approx(row["aml_incoming"] + row["aml_replay"], rel=1e-5)


# -- statistics-only baselines ---------------------------------------------------------------
def _chunks(seed: int = 0):
    """Features of 6 classes (d = 5) in three "experiences", with held-out flags."""
    from strategies.slda import holdout_mask

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(6).repeat_interleave(11)
    feats = F.normalize(torch.randn(66, 5, generator=g, dtype=torch.float64)
                        + 0.5 * labels[:, None].double().sin(), dim=1)
    holdout = holdout_mask(labels)
    parts = [labels // 2 == e for e in range(3)]
    return feats, labels, holdout, parts


def test_slda_precision_is_order_independent_and_the_one_pass_formula():
    """After the last experience Lambda equals the inverse of the shrunk pooled
    within-class covariance computed in one pass over all classes' features (each class
    centred on its own mean, divided by N - C), and A = P Lambda P with P projecting off
    the direction of all features' mean, whatever order experiences arrive in."""
    from strategies.slda import SLDA

    feats, labels, holdout, parts = _chunks()
    gamma = 0.3
    centred = feats.clone()
    for c in range(6):
        centred[labels == c] -= feats[labels == c].mean(dim=0)
    cov = centred.T @ centred / (66 - 6)
    shrunk = (1 - gamma) * cov + gamma * torch.trace(cov) / 5 * torch.eye(5, dtype=torch.float64)
    reference = torch.linalg.inv(shrunk)
    m = feats.mean(dim=0)
    m = m / m.norm()
    p = torch.eye(5, dtype=torch.float64) - torch.outer(m, m)
    for order in ([0, 1, 2], [2, 0, 1]):
        plugin = SLDA(make_config("slda", {"shrinkage": gamma}))
        for e in order:
            plugin.accumulate(feats[parts[e]], labels[parts[e]], holdout[parts[e]])
        plugin.refresh()
        assert torch.allclose(plugin.precision(), reference, rtol=1e-9, atol=1e-9)
        assert torch.allclose(plugin.matrix(), p @ reference @ p, rtol=1e-9, atol=1e-9)


def test_ranpac_transform_is_order_independent_and_the_one_pass_ridge():
    """After the last experience the ridge chosen and W equal those computed in one pass
    from per-image arrays: h = ReLU(R^T f); lambda minimises the held-out squared error
    of W_fit = (H_fit^T H_fit + lambda I)^-1 H_fit^T T_fit against T_val (T: each image's
    class-mean embedding; RanPAC's ``optimise_ridge_parameter``, RanPAC/RanPAC ``RanPAC.py``
    commit 698e00c, with the class mean in place of the one-hot target), and W =
    (H^T H + lambda I)^-1 H^T T over every image."""
    from strategies.ranpac import RIDGES, RanPAC

    feats, labels, holdout, parts = _chunks(1)
    config = make_config("ranpac", {"proj_dim": 40, "seed": 2})
    one = RanPAC(config)
    h = one.features(feats)
    mu = torch.stack([feats[labels == c].mean(dim=0) for c in range(6)])
    t = mu[labels]
    fit, val = ~holdout, holdout
    losses = []
    for lam in RIDGES:
        w = torch.linalg.solve(h[fit].T @ h[fit] + lam * torch.eye(40, dtype=torch.float64),
                               h[fit].T @ t[fit])
        losses.append(float(((h[val] @ w - t[val]) ** 2).sum()))
    lam = RIDGES[int(np.argmin(losses))]
    w = torch.linalg.solve(h.T @ h + lam * torch.eye(40, dtype=torch.float64), h.T @ t)
    for order in ([0, 1, 2], [1, 2, 0]):
        plugin = RanPAC(config)
        for e in order:
            plugin.accumulate(feats[parts[e]], labels[parts[e]], holdout[parts[e]])
        plugin.refresh()
        assert plugin.ridge == lam
        assert torch.allclose(plugin._w, w, rtol=1e-6, atol=1e-9)
        q = feats[:4]
        assert torch.allclose(plugin.transform64(q), torch.relu(q @ plugin.projection(5)) @ w,
                              rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["slda", "ranpac"])
def test_statistics_after_the_stream_equal_one_pass_over_every_seen_class(name):
    """End to end on the kit's stream: the plugin's statistics after the last experience
    equal those of one pass over all three experiences' train features (the trunk never
    changes), and so does the query transform."""
    from strategies.slda import holdout_mask

    bench = tiny_stream()
    tpl = build_template(name, {"proj_dim": 64} if name == "ranpac" else None)
    tpl.run(bench)
    plugin = tpl._strategy_plugins()[0]
    one = type(plugin)(plugin.config)
    for exp in bench.train_stream:  # each experience's holdout is its own, as in training
        feats, labels = embed_items(tpl, evaluation_items(exp))
        one.accumulate(feats, labels, holdout_mask(labels))
    one.refresh()
    q = torch.randn(5, feats.shape[1])
    assert torch.allclose(plugin.query_transform(q), one.query_transform(q), atol=1e-6)


def test_a_query_transform_reaches_only_the_queries():
    """``metrics.plugins``: with a plugin exposing ``query_transform`` every query is
    transformed and ranked against the plain embeddings (its own image left out); an
    identity transform gives the leave-one-out numbers."""
    from metrics.plugins import query_transform
    from metrics.retrieval import evaluate_query_gallery, evaluate_retrieval

    class Plugin:
        def __init__(self, fn):
            self.query_transform = fn

    class Strategy:
        def __init__(self, *fns):
            self.plugins = [object(), *(Plugin(fn) for fn in fns)]

    assert query_transform(Strategy()) is None
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(40, 6), dim=1)
    lab = torch.arange(8).repeat_interleave(5)
    same = evaluate_query_gallery(query_transform(Strategy(lambda x: x))(emb), lab, emb, lab,
                                  (1, 2), True)
    loo = evaluate_retrieval(emb, lab, (1, 2), True)
    assert same.recall == loo.recall and same.map_at_r == pytest.approx(loo.map_at_r)
    a = torch.randn(6, 6)
    composed = query_transform(Strategy(lambda x: x @ a, lambda x: x * 2))
    assert torch.allclose(composed(emb), emb @ a * 2)


def test_the_evaluation_ranks_plain_gallery_vectors_against_transformed_queries():
    """End to end (``slda`` on the kit's stream): the seen-classes Recall after the last
    experience is that of the transformed test embeddings as queries against the plain ones
    as the gallery (each query's own image left out), not the leave-one-out value."""
    from metrics.retrieval import evaluate_query_gallery, evaluate_retrieval

    bench = tiny_stream()
    tpl = build_template("slda")
    tpl.run(bench)
    plugin = tpl._strategy_plugins()[0]
    parts = [embed_items(tpl, exp.dataset) for exp in bench.test_stream]
    emb = torch.cat([f for f, _ in parts]).float()
    lab = torch.cat([y for _, y in parts])
    expected = evaluate_query_gallery(plugin.query_transform(emb), lab, emb, lab, (1, 2))
    assert tpl.metrics.seen_curve(1)[-1] == expected.recall[1]
    assert tpl.metrics.seen_curve(2)[-1] == expected.recall[2]
    assert evaluate_retrieval(emb, lab, (1,)).recall[1] != expected.recall[1]


# -- bad input -------------------------------------------------------------------------------
def test_a_buffer_larger_than_the_data_seen_is_refused_before_training():
    """The preflight refuses mem_size above every train image of every experience but the
    last (the kit's stream: 2 x 40 = 80), for every buffer strategy and for a variant."""
    from benchmarks.config import Cell, resolved_hparams
    from benchmarks.contract import tiny_cell
    from benchmarks.errors import LrbenchError
    from benchmarks.run.preflight import check_cells

    for name in ("replay", "der", "er_aml"):
        check_cells([tiny_cell(name, {"mem_size": 80})])
        big = tiny_cell(name, {"mem_size": 81})
        with pytest.raises(LrbenchError, match="mem_size 81 is larger than the data the "
                           r"buffer can have seen \(80 train images"):
            check_cells([big])
    variant = Cell(**{**tiny_cell("replay").model_dump(), "strategy": "replay-big",
                      "plugin": "replay", "hparams": resolved_hparams(
                          "replay", {"mem_size": 1000, "selection": "herding"})})
    with pytest.raises(LrbenchError, match="strategy 'replay-big' on scenario"):
        check_cells([variant])


def test_herding_on_a_strategy_without_a_buffer_names_those_that_have_one():
    from strategies.registry import StrategyError

    with pytest.raises(StrategyError, match=r"no hyperparameter 'selection' \('selection' is "
                       r"a hyperparameter of der, er_aml, replay, not of 'finetune'\)"):
        make_config("finetune", {"selection": "herding"})
