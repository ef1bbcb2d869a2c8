"""The never-re-indexed gallery, compatibility metrics, bct, sdc and ldc (issue #30).

Reference formulas are written here in our own code, each naming the file and commit it was
compared with; the reference sources are not part of the repository.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metrics.compatibility import (
    MIN_BACKFILL_GAIN,
    average_accuracy,
    average_compatibility,
    backfill_gain,
    backward_compatibility,
    compatibility_summary,
    compatible_pairs,
    cross_test_gain,
    forward_compatibility,
    gain_ratio,
    pooled_update_gain,
    update_gain,
)
from metrics.gallery import StoredGallery, mixed_gallery

NAN = float("nan")


# -- compatibility metrics ----------------------------------------------------------------------
#: a hand case with a tie (M[2][0] == M[0][0]) and one pair below (M[2][1] < M[1][1])
M_HAND = np.array([[0.5, NAN, NAN],
                   [0.6, 0.7, NAN],
                   [0.5, 0.65, 0.8]])
S_HAND = np.array([[0.5, NAN, NAN],
                   [0.8, 0.7, NAN],
                   [0.9, 0.85, 0.8]])


def cl2r_average_compatibility(matrix: np.ndarray) -> float:
    """NiccoBiondi/CompatibleLifelongRepresentation ``src/cl2r/metrics.py`` at af6025a
    (``average_compatibility``), rewritten: a pair i > j is incompatible when M[i][j] <
    M[j][j], so a tie counts as compatible; with one model the result is 1."""
    t = matrix.shape[0]
    bad = sum(matrix[i][j] < matrix[j][j] for j in range(t) for i in range(j + 1, t))
    most = max(t * (t - 1) / 2, 1)
    return (most - bad) / most


def cl2r_backward(matrix: np.ndarray) -> float:
    """Same file: ``backward_compatibility``, mean over i < T-1 of M[-1][i] - M[i][i]."""
    t = matrix.shape[0]
    return sum(matrix[-1][i] - matrix[i][i] for i in range(t - 1)) / (t - 1)


def cl2r_forward(matrix: np.ndarray) -> float:
    """Same file: ``forward_compatibility``, mean over 1 <= i < T of M[i][i-1] - M[i][i]."""
    t = matrix.shape[0]
    return sum(matrix[i][i - 1] - matrix[i][i] for i in range(1, t)) / (t - 1)


def iamcl2r_average_accuracy(matrix: np.ndarray) -> float:
    """miccunifi/iamcl2r ``src/iamcl2r/compatibility_metrics.py`` at c2f686c
    (``average_accuracy``), rewritten: scaled by 100 when the last row is below 1, zeros
    (the unfilled upper triangle, and true zeros too) turned into NaN, then the NaN-mean."""
    m = matrix * 100 if max(matrix[-1]) < 1 else matrix.copy()
    m = m.copy()
    m[m == 0] = np.nan
    return float(np.nanmean(m))


def test_compatibility_metrics_on_a_hand_case():
    assert compatible_pairs(M_HAND).tolist() == [[False] * 3, [True, False, False],
                                                 [False, False, False]]
    assert average_compatibility(M_HAND) == pytest.approx(1 / 3)
    assert average_accuracy(M_HAND) == pytest.approx((0.5 + 0.6 + 0.7 + 0.5 + 0.65 + 0.8) / 6)
    assert backward_compatibility(M_HAND) == pytest.approx(((0.5 - 0.5) + (0.65 - 0.7)) / 2)
    assert forward_compatibility(M_HAND) == pytest.approx(((0.6 - 0.7) + (0.65 - 0.8)) / 2)
    g = update_gain(M_HAND, S_HAND)
    assert g[1, 0] == pytest.approx((0.6 - 0.5) / (0.8 - 0.5))
    assert g[2, 0] == pytest.approx(0.0)
    assert g[2, 1] == pytest.approx((0.65 - 0.7) / (0.85 - 0.7))
    assert np.isnan(g[np.triu_indices(3)]).all()
    summary = compatibility_summary(M_HAND, S_HAND)
    assert summary["compatible"] == 1 and summary["pairs"] == 3
    # numerators over the pairs (1,0), (2,0), (2,1): 0.1, 0.0, -0.05; denominators 0.3,
    # 0.4, 0.15
    assert summary["cross_test_gain"] == pytest.approx((0.1 + 0.0 - 0.05) / 3)
    assert summary["backfill_gain"] == pytest.approx((0.3 + 0.4 + 0.15) / 3)
    assert summary["update_gain_pooled"] == pytest.approx(0.05 / 0.85)


def test_pooled_update_gain_is_not_ruled_by_a_tiny_backfill_gain():
    """One pair whose backfill gain is a single query in a thousand has the ratio -40 and
    makes the mean of the per-pair ratios -13.5; pooled over the pairs, the numerators and
    denominators add up first (-0.1 / 0.251 = -0.40). Where backfilling would gain less
    than one point of Recall@1 on the whole (or lose), the ratio would divide by noise
    (the CUB subset had a cell at 0.0005, about one query, giving -142): undefined."""
    m = np.array([[0.8, np.nan, np.nan], [0.76, 0.7, np.nan], [0.75, 0.69, 0.7]])
    s = np.array([[0.8, np.nan, np.nan], [0.801, 0.7, np.nan], [0.9, 0.85, 0.7]])
    g = update_gain(m, s)
    assert g[1, 0] == pytest.approx(-0.04 / 0.001)  # the per-pair ratio BCT defines
    assert np.nanmean(g) == pytest.approx((-40 - 0.5 - 0.01 / 0.15) / 3)
    assert pooled_update_gain(m, s) == pytest.approx(
        (-0.04 - 0.05 - 0.01) / (0.001 + 0.1 + 0.15))
    # S = M off the diagonal (each old gallery re-embedded gives what the cross test
    # gives): backfill gain = cross-test gain, here negative: nothing to share
    assert backfill_gain(m, m) == cross_test_gain(m) < 0
    assert math.isnan(pooled_update_gain(m, m))
    tiny = s.copy()
    tiny[2, 0], tiny[2, 1] = 0.8 + 0.0005, 0.7 + 0.0005  # backfill gain about 0.0007
    assert 0 < backfill_gain(m, tiny) < MIN_BACKFILL_GAIN
    assert math.isnan(pooled_update_gain(m, tiny))
    assert gain_ratio(-0.05, MIN_BACKFILL_GAIN) == pytest.approx(-5.0)  # at the bound
    assert math.isnan(gain_ratio(-0.05, MIN_BACKFILL_GAIN * 0.99))
    assert math.isnan(cross_test_gain(np.array([[0.8]])))  # one model: no pair


def test_update_gain_is_undefined_where_backfilling_would_not_help():
    s = S_HAND.copy()
    s[1, 0] = 0.5  # the backfilled self-test is no better than model 0's own
    g = update_gain(M_HAND, s)
    assert np.isnan(g[1, 0]) and np.isfinite(g[2, 0])


def test_compatibility_against_the_reference_formulas():
    rng = np.random.default_rng(0)
    for t in (2, 3, 5):
        m = np.tril(rng.uniform(0.05, 0.95, (t, t)))
        m[np.triu_indices(t, 1)] = NAN
        assert backward_compatibility(m) == pytest.approx(cl2r_backward(np.nan_to_num(m)))
        assert forward_compatibility(m) == pytest.approx(cl2r_forward(np.nan_to_num(m)))
        # no tie, no zero: the references agree with ours (iamcl2r's in percent)
        assert average_compatibility(m) == pytest.approx(
            cl2r_average_compatibility(np.nan_to_num(m)))
        assert 100 * average_accuracy(m) == pytest.approx(
            iamcl2r_average_accuracy(np.nan_to_num(m)))
    # where they differ, by design: a tie is not compatible here (CL2R: it is) ...
    assert cl2r_average_compatibility(np.nan_to_num(M_HAND)) == pytest.approx(2 / 3)
    assert average_compatibility(M_HAND) == pytest.approx(1 / 3)
    # ... a true 0 counts (iamcl2r's code leaves it out) ...
    zero = M_HAND.copy()
    zero[2, 0] = 0.0
    assert average_accuracy(zero) == pytest.approx((0.5 + 0.6 + 0.7 + 0.0 + 0.65 + 0.8) / 6)
    assert iamcl2r_average_accuracy(np.nan_to_num(zero)) / 100 == pytest.approx(
        (0.5 + 0.6 + 0.7 + 0.65 + 0.8) / 5)
    # ... and one model has nothing to be compatible with (CL2R's code says 1)
    one = np.array([[0.4]])
    assert np.isnan(average_compatibility(one)) and cl2r_average_compatibility(one) == 1
    assert np.isnan(backward_compatibility(one)) and np.isnan(forward_compatibility(one))
    assert average_accuracy(one) == pytest.approx(0.4)


# -- the never-re-indexed gallery ----------------------------------------------------------------
def brute(queries, gallery, labels, parts, ks, top):
    """Brute force: each query against every other row of the gallery (by index), cosine,
    ties by gallery index; Recall@K, mAP@R and the top-``top`` share of each part."""
    q = F.normalize(torch.as_tensor(queries, dtype=torch.float64), dim=1)
    g = F.normalize(torch.as_tensor(gallery, dtype=torch.float64), dim=1)
    labels, parts = list(labels), list(parts)
    n = len(labels)
    hits = {k: [] for k in ks}
    aps, share = [], np.zeros(max(parts) + 1)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        sims = [float(q[i] @ g[j]) for j in others]
        order = [others[a] for a in sorted(range(len(others)), key=lambda a: (-sims[a],
                                                                              others[a]))]
        rel = [labels[j] == labels[i] for j in order]
        r = sum(rel)
        for j in order[:top]:
            share[parts[j]] += 1 / top / n
        if r == 0:
            continue
        for k in ks:
            hits[k].append(any(rel[:k]))
        aps.append(sum(sum(rel[:p + 1]) / (p + 1) for p in range(r) if rel[p]) / r)
    return {k: float(np.mean(v)) for k, v in hits.items()}, float(np.mean(aps)), share


def test_mixed_gallery_against_brute_force():
    rng = np.random.default_rng(1)
    n, d = 30, 5
    labels = torch.tensor(rng.integers(0, 6, n))
    parts = torch.tensor(np.repeat([0, 1, 2], 10))
    queries = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32)
    gallery = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32)
    gallery[7] = gallery[3]  # a tie between two gallery items
    old = parts < 2
    got = mixed_gallery(queries, labels, gallery, parts, (1, 2, 4), True, old,
                        block_size=7)
    recall, m_ap, share = brute(queries, gallery, labels, parts, (1, 2, 4), 4)
    assert got["all"]["recall"] == pytest.approx(recall)
    assert got["all"]["map_at_r"] == pytest.approx(m_ap)
    assert got["share"] == pytest.approx(share.tolist())
    assert got["gallery_share"] == pytest.approx([1 / 3] * 3)
    rows = old.numpy()
    q_hits = []  # Recall@1 of the old-class queries alone, by brute force
    for i in np.flatnonzero(rows):
        sims = F.normalize(queries[i:i + 1].double(), dim=1) @ F.normalize(
            gallery.double(), dim=1).T
        sims[0, i] = -math.inf
        if int((labels == labels[i]).sum()) > 1:
            j = int(torch.argmax(sims[0]))  # first maximum: the lowest index of a tie
            q_hits.append(bool(labels[j] == labels[i]))
    assert got["old"]["recall"][1] == pytest.approx(np.mean(q_hits))


class Fake:
    """The strategy an Avalanche metric sees: its plugins."""

    def __init__(self, plugins=()):
        self.plugins = list(plugins)


def axis(i: int, eps: float = 0.0, other: int | None = None, d: int = 4) -> list[float]:
    v = [0.0] * d
    v[i] = 1.0
    if other is not None:
        v[other] = eps
    return v


def hand_passes():
    """Experience 0: classes 0 (along e0) and 1 (along e1); experience 1: classes 2, 3.
    Model 1 embeds image A1 of class 0 like class 1: its query flips to wrong."""
    lab0, lab1 = torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2, 3, 3])
    model0 = torch.tensor([axis(0), axis(0, 0.1, 1), axis(1), axis(1, 0.1, 0)])
    model1_exp0 = torch.tensor([axis(1, 0.1, 0), axis(0, 0.1, 1), axis(1), axis(1, 0.1, 0)])
    exp1 = torch.tensor([axis(2), axis(2, 0.1, 3), axis(3), axis(3, 0.1, 2)])
    return {0: (model0, lab0), 1: (exp1, lab1)}, {0: (model1_exp0, lab0), 1: (exp1, lab1)}


def test_negative_flips_and_stored_parts_on_a_hand_case():
    step0, step1 = hand_passes()
    g = StoredGallery((1, 2))
    assert g.update(Fake(), 0, step0)
    assert g.update(Fake(), 1, step1)
    assert torch.equal(g.parts[0], step0[0][0])  # stored once, by model 0
    assert g.steps[0]["all"]["recall"][1] == 1.0
    # step 1: A1's query (model 1) now nears class 1's stored vectors: 1 flip of 4
    assert g.steps[1]["nfr"] == pytest.approx(1 / 4)
    assert g.steps[1]["pfr"] == 0.0
    assert g.steps[1]["flip_queries"] == 4
    assert g.steps[1]["old"]["recall"][1] == pytest.approx(3 / 4)
    assert g.steps[1]["new"]["recall"][1] == 1.0
    payload = g.payload(2)
    nri = payload["never_reindexed"]
    assert nri["negative_flip_rate"] == [None, pytest.approx(0.25)]
    assert nri["recall"]["1"] == [1.0, pytest.approx(7 / 8)]
    assert nri["gallery_vectors"] == "as embedded" and nri["updated_parts"] == [[], []]
    comp = payload["compatibility"]
    # M[1][0]: model 1's queries of experience 0 against model 0's gallery of it
    assert comp["matrix"][1][0] == pytest.approx(3 / 4)
    # S[1][0], re-embedded by model 1: A1 and B2 now coincide, so A1, B1 (nearest A1 by
    # index on a tie with B2) and B2 are wrong, only A2 (nearest A1 on a tie) is right
    assert comp["matrix"][0][0] == 1.0 and comp["self_test"][1][0] == pytest.approx(1 / 4)
    assert comp["ac"] == 0.0 and comp["bc"] == pytest.approx(-0.25)
    assert comp["update_gain"][1][0] is None  # backfilling would not help: undefined


class Shift:
    """A drift-compensating plugin: moves every stored vector by +1 in its last dimension,
    its update computed from experience 1."""

    strategy_name = "shift"
    gallery_update_step = 1

    def __init__(self):
        self.calls = 0

    def update_gallery(self, v):
        self.calls += 1
        out = v.clone()
        out[:, -1] += 1
        return out


def test_a_gallery_update_is_applied_once_and_recorded():
    step0, step1 = hand_passes()
    plugin = Shift()
    g = StoredGallery((1,))
    g.update(Fake([plugin]), 0, step0)
    assert plugin.calls == 0  # its update is for experience 1
    g.update(Fake([plugin]), 1, step1)
    g.update(Fake([plugin]), 1, step1)  # evaluated twice: updated once
    assert plugin.calls == 1
    assert torch.equal(g.parts[0][:, -1], step0[0][0][:, -1] + 1)
    assert torch.equal(g.parts[1], step1[1][0])  # the new part is stored as embedded
    assert torch.equal(g.models[0][0], step0[0][0])  # M uses the models' own vectors
    nri = g.payload(2)["never_reindexed"]
    assert nri["gallery_vectors"] == "updated by shift (drift compensation)"
    assert nri["updated_parts"] == [[], [0]]


def test_state_round_trip_and_an_older_checkpoint():
    step0, step1 = hand_passes()
    g = StoredGallery((1, 2))
    g.update(Fake(), 0, step0)
    resumed = StoredGallery((1, 2))
    resumed.load_state_dict(copy.deepcopy(g.state_dict()))
    for x in (g, resumed):
        x.update(Fake(), 1, step1)
    assert resumed.payload(2) == g.payload(2)
    old = StoredGallery((1, 2))
    old.load_state_dict(None)  # a checkpoint written before this state existed
    old.update(Fake(), 1, step1)
    assert old.payload(2) == {}  # incomplete: nothing reported rather than a partial curve


# -- the runs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs():
    """Payloads of tiny cells (the contract kit's stream, 6 steps per experience)."""
    from benchmarks.contract import tiny_cell
    from benchmarks.run.cell import run_cell

    cells = {"finetune": tiny_cell("finetune"), "pretrained": tiny_cell("pretrained"),
             "sdc": tiny_cell("sdc"), "ldc": tiny_cell("ldc"), "bct": tiny_cell("bct"),
             "off": tiny_cell("finetune").model_copy(update={"evaluation": tiny_cell(
                 "finetune").evaluation.model_copy(update={"never_reindexed": False,
                                                           "compatibility": False})})}
    return {name: run_cell(cell, log=lambda m: None) for name, cell in cells.items()}


def test_the_new_evaluation_changes_no_other_number(runs):
    on, off = runs["finetune"], runs["off"]
    assert "never_reindexed" in on and "compatibility" in on
    assert "never_reindexed" not in off and "compatibility" not in off
    for key in ("r_matrix", "seen", "summary", "losses"):
        assert on[key] == off[key], key


def test_cell_hashes_are_unchanged():
    """Hashes computed at 3822932 (before the option existed): the default leaves them."""
    from benchmarks.contract import tiny_cell

    assert tiny_cell("finetune").hash == "0dbdc272da04e5c1"
    assert tiny_cell("fecd").hash == "58fd1d7ea76d95d7"
    off = tiny_cell("finetune").model_copy(update={"evaluation": tiny_cell(
        "finetune").evaluation.model_copy(update={"never_reindexed": False})})
    assert off.hash != "0dbdc272da04e5c1"


def test_never_reindexed_equals_re_embedded_where_no_model_changed(runs):
    for name in ("finetune", "pretrained", "bct"):
        p = runs[name]
        assert p["never_reindexed"]["recall"]["1"][0] == p["seen"]["recall"]["1"][0]
        assert p["compatibility"]["matrix"][0][0] == p["seen"]["recall"]["1"][0]
    p = runs["pretrained"]  # the model never changes: the stored gallery is current
    assert p["never_reindexed"]["recall"] == p["seen"]["recall"]
    assert p["never_reindexed"]["negative_flip_rate"][1:] == [0.0, 0.0]
    assert p["compatibility"]["ac"] == 0.0  # ties are not compatible (strict)
    for i in range(3):
        assert p["compatibility"]["matrix"][i][i] == p["seen"]["recall"]["1"][i]


def test_drift_compensation_trains_as_the_wrapped_strategy(runs):
    fine = runs["finetune"]
    for name in ("sdc", "ldc"):
        p = runs[name]
        for key in ("r_matrix", "seen", "losses"):
            assert p[key] == fine[key], (name, key)
        assert p["compatibility"]["matrix"] == fine["compatibility"]["matrix"]
        nri = p["never_reindexed"]
        assert nri["gallery_vectors"] == f"updated by {name} (drift compensation)"
        assert nri["updated_parts"] == [[], [0], [0, 1]]
        assert nri["recall"]["1"][0] == fine["never_reindexed"]["recall"]["1"][0]
    assert runs["sdc"]["never_reindexed"]["recall"] != fine["never_reindexed"]["recall"]


def test_checkpoint_resume_keeps_the_stored_gallery(tmp_path):
    from benchmarks.contract import build_template, tiny_stream

    bench = tiny_stream()
    whole = build_template("sdc")
    whole.run(bench)
    ckpt = tmp_path / "checkpoint.pt"
    part = build_template("sdc")
    part.run(bench, checkpoint=ckpt, stop_after=2)
    resumed = build_template("sdc", seed=1)
    resumed.seed = 0
    resumed.load_checkpoint(ckpt)
    resumed.run(bench)
    assert resumed.metrics.gallery.payload(3) == whole.metrics.gallery.payload(3)


# -- strategies: losses against the reference formulas -------------------------------------------
def sdc_il_displacement(y1, y2, embedding_old, sigma):
    """yulu0724/SDC-IL ``test.py`` at 3c4e082 (and edf3f87, the same function),
    ``displacement(Y1, Y2, embedding_old, sigma)``, rewritten in numpy: DY = Y2 - Y1;
    W[m, i] = exp(-||Y1_i - e_m||^2 / (2 sigma^2)); W normalised per row; sum_i W DY_i."""
    dy = y2 - y1
    dist = ((y1[None, :, :] - embedding_old[:, None, :]) ** 2).sum(axis=2)
    w = np.exp(-dist / (2 * sigma ** 2))
    w = w / w.sum(axis=1, keepdims=True)
    return (w[:, :, None] * dy[None, :, :]).sum(axis=1)


def test_sdc_drift_matches_the_reference():
    from strategies.sdc import sdc_drift

    rng = np.random.default_rng(2)
    for _ in range(3):
        y1 = rng.normal(size=(40, 8))
        y1 /= np.linalg.norm(y1, axis=1, keepdims=True)
        y2 = y1 + 0.1 * rng.normal(size=y1.shape)
        mu = rng.normal(size=(7, 8))
        mu /= np.linalg.norm(mu, axis=1, keepdims=True)
        got = sdc_drift(torch.tensor(y1), torch.tensor(y2), torch.tensor(mu), 0.3)
        assert got.numpy() == pytest.approx(sdc_il_displacement(y1, y2, mu, 0.3), abs=1e-10)


def test_sdc_weights_do_not_underflow():
    """With a tiny sigma every reference weight underflows to 0 and its drift is 0/0 = NaN;
    the log-space weights give the displacement of the nearest anchor."""
    from strategies.sdc import sdc_drift

    y1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    y2 = y1 + np.array([[0.5, 0.0], [0.0, -0.25]])
    point = np.array([[0.9, 0.3]])  # nearer the first anchor
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.isnan(sdc_il_displacement(y1, y2, point, 1e-3)).all()
    got = sdc_drift(torch.tensor(y1), torch.tensor(y2), torch.tensor(point), 1e-3)
    assert got.tolist() == [[0.5, 0.0]]


def test_ldc_loss_matches_the_reference():
    """alviur/ldc ``LDC_supervised/models/lwf.py`` at 9b65fe1: ``nn.Linear(512, 512,
    bias=False)`` trained by ``torch.nn.MSELoss()(projector(feats_old), feats_new)``."""
    from strategies.ldc import fit_projector, ldc_loss

    gen = torch.Generator().manual_seed(3)
    old, new = torch.randn(16, 6, generator=gen), torch.randn(16, 6, generator=gen)
    projector = torch.nn.Linear(6, 6, bias=False)
    reference = torch.nn.MSELoss()(projector(old), new)
    assert ldc_loss(old @ projector.weight.T, new).item() == pytest.approx(reference.item())
    # the projector learns a linear drift; from the identity, an unfit one moves nothing
    drift = torch.randn(6, 6, generator=gen, dtype=torch.float64) * 0.1 + torch.eye(
        6, dtype=torch.float64)
    x = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    weight, history = fit_projector(x, x @ drift.T, epochs=200, lr=0.01, batch_size=64,
                                    seed=0)
    assert history[-1] < 1e-3 * history[0] and torch.allclose(weight, drift, atol=0.02)
    still, _ = fit_projector(x, x @ drift.T, epochs=1, lr=1e-12, batch_size=64, seed=0)
    assert torch.allclose(still, torch.eye(6, dtype=torch.float64), atol=1e-9)


def openbct_influence(old_features, new_features, labels, n_classes):
    """YantaoShen/openBCT: the old classifier synthesised by ``ClassifierGenerator``
    (``evaluate/evaluators.py`` at 5fd43c1: row c = the mean of class c's old-model
    features), loaded into ``old_fc = nn.Linear(d, n, bias=False)`` (``models/resnet.py``
    at 4223004), and ``criterion(old_output, target)`` with ``nn.CrossEntropyLoss`` on the
    new model's features (``main.py`` at 140f807, no ``n2o_map``: every sample)."""
    w = np.zeros((n_classes, old_features.shape[1]))
    for f, y in zip(old_features.numpy(), labels.tolist(), strict=True):
        w[y] += f
    for c in range(n_classes):
        count = int((labels == c).sum())
        if count:
            w[c] /= count
    old_fc = torch.nn.Linear(old_features.shape[1], n_classes, bias=False)
    with torch.no_grad():
        old_fc.weight.copy_(torch.from_numpy(w).float())
    return torch.nn.CrossEntropyLoss()(old_fc(new_features), labels), torch.from_numpy(w)


def test_bct_influence_loss_matches_the_reference():
    from strategies.bct import influence_loss, synthesised_classifier

    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        labels = torch.randint(0, 5, (24,), generator=gen)
        old_f, new_f = torch.randn(24, 8, generator=gen), torch.randn(24, 8, generator=gen)
        reference, w_ref = openbct_influence(old_f, new_f, labels, 5)
        w = synthesised_classifier(old_f, labels, 5)
        assert w.double().numpy() == pytest.approx(w_ref.numpy(), abs=1e-6)
        assert influence_loss(new_f, w, labels, cosine=False).item() == pytest.approx(
            reference.item(), rel=1e-5)
        # lrbench's cosine classifier: the same formula with unit rows and s-scaled unit
        # features (the reference's old_fc and features normalised first)
        old_fc = torch.nn.Linear(8, 5, bias=False)
        with torch.no_grad():
            old_fc.weight.copy_(F.normalize(w_ref.float(), dim=1))
        ref_cos = torch.nn.CrossEntropyLoss()(old_fc(20.0 * F.normalize(new_f, dim=1)), labels)
        assert influence_loss(new_f, w, labels, scale=20.0).item() == pytest.approx(
            ref_cos.item(), rel=1e-5)


def test_bct_old_classifier_synthesises_the_new_classes(runs):
    from benchmarks.contract import build_template, tiny_stream

    bench = tiny_stream()
    tpl = build_template("bct")
    tpl.run(bench, stop_after=2)
    plugin = tpl.plugins[0]
    w = plugin.old_classifier  # built for experience 1 from the model after experience 0
    assert w is not None and w.shape[0] == 8
    # the teacher is now model 1 (after experience 1), whose classifier knows classes 0-7
    teacher_rows = plugin.teacher.classifier.weight
    assert w[4:].abs().sum() > 0 and teacher_rows.shape[0] == 8
    assert runs["bct"]["losses"]["bct"][0] is None and runs["bct"]["losses"]["bct"][1] > 0


# -- reports: the columns and tables read the cells' sections ----------------------------------
def test_report_columns_and_tables_against_the_cells(smoke_store, tmp_path):
    """reports.compatibility recomputed by hand from each result.json: the summary columns
    (final_nri, nri_cost, nfr, ac, am, bc, fc, cross_test_gain, backfill_gain, update_gain),
    the gallery and compatibility tables (means over seeds; the table's update gain pooled
    over seeds too); a store without the sections reports NaN and no table."""
    import json
    import shutil

    from reports import compatibility as rc
    from reports.load import load_results, summaries

    res = load_results([smoke_store])
    table = summaries(res).set_index(["strategy", "seed"])
    expected: dict[str, list[list[float]]] = {}
    for path in sorted(smoke_store.glob("cells/*/result.json")):
        cell = json.loads(path.read_text())
        payload, strategy, seed = cell["payload"], cell["config"]["strategy"], cell["config"][
            "seed"]
        nri = payload["never_reindexed"]["recall"]["1"]
        seen = payload["seen"]["recall"]["1"]
        flips = payload["never_reindexed"]["negative_flip_rate"]
        m = payload["compatibility"]["matrix"]
        s = payload["compatibility"]["self_test"]
        t = len(m)
        pairs = [(i, j) for i in range(t) for j in range(i)]
        cross = sum(m[i][j] - m[j][j] for i, j in pairs) / len(pairs)
        backfill = sum(s[i][j] - m[j][j] for i, j in pairs) / len(pairs)
        want = {"final_nri": nri[-1], "nri_cost": seen[-1] - nri[-1],
                "nfr": sum(flips[1:]) / (t - 1),
                "ac": sum(m[i][j] > m[j][j] for i, j in pairs) / len(pairs),
                "am": sum(m[i][j] for i in range(t) for j in range(i + 1)) / (t * (t + 1) / 2),
                "bc": sum(m[t - 1][i] - m[i][i] for i in range(t - 1)) / (t - 1),
                "fc": sum(m[i][i - 1] - m[i][i] for i in range(1, t)) / (t - 1),
                "cross_test_gain": cross, "backfill_gain": backfill,
                "update_gain": cross / backfill if backfill >= 0.01 else math.nan}
        row = table.loc[(strategy, seed)]
        for col, value in want.items():
            assert row[col] == pytest.approx(value, nan_ok=True), (strategy, seed, col)
        expected.setdefault(strategy, []).append(
            [want["ac"], want["am"], want["bc"], want["fc"], cross, backfill])
    comp = rc.compatibility_table(res, "synth-tiny")
    gallery = rc.gallery_table(res, "synth-tiny", "recall@1")
    for strategy, rows in expected.items():
        means = np.mean(np.array(rows, dtype=float), axis=0).tolist()
        assert comp.loc[strategy, ["AC", "AM", "BC", "FC", "cross-test gain",
                                   "backfill gain"]].tolist() == pytest.approx(means)
        gain = comp.loc[strategy, "update gain"]
        assert gain == pytest.approx(means[4] / means[5]) if means[5] >= 0.01 else \
            np.isnan(gain)
        cells = table.loc[strategy]
        assert gallery.loc[strategy, "cost of not backfilling"] == pytest.approx(
            cells["nri_cost"].mean())
        assert gallery.loc[strategy, "R@1 never re-indexed"] == pytest.approx(
            cells["final_nri"].mean())
    assert "nri@recall@1" in rc.cells_csv(res, "synth-tiny")
    # a store written before the sections existed: NaN columns, no table, no CSV
    old = tmp_path / "old"
    shutil.copytree(smoke_store, old)
    for path in old.glob("cells/*/result.json"):
        cell = json.loads(path.read_text())
        for section in ("never_reindexed", "compatibility"):
            cell["payload"].pop(section)
        path.write_text(json.dumps(cell))
    before = load_results([old])
    assert summaries(before)[list(rc.COLUMNS)].isna().all().all()
    assert rc.gallery_table(before, "synth-tiny", "recall@1").empty
    assert rc.compatibility_table(before, "synth-tiny").empty
    assert rc.cells_csv(before, "synth-tiny") == ""


def test_listing_a_drift_compensation_shows_its_defaults():
    """``on_params`` has a default factory: the listing showed pydantic's
    ``PydanticUndefined`` sentinel as its default, and ``lrbench list strategies --json``
    failed on it with a TypeError (not JSON serializable)."""
    import json

    from strategies import get_strategy

    for name in ("sdc", "ldc"):
        spec = get_strategy(name)
        params = {p["name"]: p["default"] for p in spec.hyperparameters()}
        assert params["on_params"] == {} and params[f"{name}_on"] == "finetune"
        assert json.loads(json.dumps(spec.describe()))["name"] == name


def test_the_report_page_writes_matrix_entries_as_code(smoke_store, tmp_path):
    """``M[i][j]`` outside a code span is a reference-style link to Markdown (mkdocs
    --strict warns on the committed real-data report): the compatibility paragraph and
    caption write matrix entries as code, or without brackets."""
    import re

    from benchmarks.cli import main

    assert main(["report", str(smoke_store), "--format", "md", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.md").read_text()
    assert "`M[i][j] > M[j][j]`" in page
    prose = re.sub(r"`[^`\n]*`", "", page)
    assert not re.findall(r"\w\[[^\]\n]+\]\[[^\]\n]+\]", prose)


def test_the_files_the_report_page_names_exist(smoke_store, tmp_path):
    """A scenario named like the real ones ('cub-subset-50+5x10') is written to files with
    '+' made safe: the page names those files, not the scenario's raw name."""
    import re
    import shutil

    from benchmarks.cli import main

    store = tmp_path / "store"
    shutil.copytree(smoke_store, store)
    for path in store.glob("cells/*/result.json"):
        path.write_text(path.read_text().replace("synth-tiny", "synth+tiny"))
    out = tmp_path / "r"
    assert main(["report", str(store), "--format", "md,csv", "--out", str(out)]) == 0
    named = set(re.findall(r"`([a-z]+/[^`/ ]+\.csv)`", (out / "report.md").read_text()))
    assert {"pairwise/synth-tiny.csv", "compatibility/synth-tiny.csv"} <= named
    assert all((out / n).is_file() for n in named), named
