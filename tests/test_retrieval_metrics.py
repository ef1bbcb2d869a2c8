"""The Recall@K / mAP@R engine against a brute-force reference, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics import (
    evaluate_query_gallery,
    evaluate_retrieval,
    knn_leave_one_out,
    map_at_r,
    recall_at_k,
)


# -- brute-force reference: plain numpy, one query at a time, stable sort -----------------
def brute_ranking(x: np.ndarray, q: int, gallery: np.ndarray | None = None,
                  exclude: int | None = None) -> np.ndarray:
    g = x if gallery is None else gallery
    qx = x[q] / max(np.linalg.norm(x[q]), 1e-12)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    sims = (gn @ qx).astype(np.float32)
    order = np.lexsort((np.arange(len(g)), -sims))  # similarity desc, index asc
    return order[order != exclude] if exclude is not None else order


def brute(x, y, ks, gallery=None, gallery_y=None, exclude_self=True):
    gy = y if gallery_y is None else gallery_y
    hits = {k: [] for k in ks}
    aps = []
    excluded = 0
    for q in range(len(x)):
        ranking = brute_ranking(x, q, gallery, q if exclude_self else None)
        rel = gy[ranking] == y[q]
        r = int(rel.sum())
        if r == 0:
            excluded += 1
            continue
        for k in ks:
            hits[k].append(rel[:k].any())
        prec = np.cumsum(rel[:r]) / np.arange(1, r + 1)
        aps.append(float((prec * rel[:r]).sum() / r))
    recall = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    return recall, float(np.mean(aps)) if aps else float("nan"), len(aps), excluded


def check(x, y, ks=(1, 2, 4, 8), block_size=7):
    res = evaluate_retrieval(torch.tensor(x), torch.tensor(y), ks, map_at_r=True,
                             block_size=block_size)
    recall, m_ap, n, excluded = brute(x, y, ks)
    assert res.recall == pytest.approx(recall, abs=1e-12)
    assert res.map_at_r == pytest.approx(m_ap, abs=1e-6)
    assert (res.num_queries, res.num_excluded) == (n, excluded)
    return res


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("block_size", [3, 7, 64])
def test_random_data(seed, block_size):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 60))
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = rng.integers(0, 6, n)
    check(x, y, block_size=block_size)


def test_duplicated_embeddings_count_as_neighbours():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(15, 4)).astype(np.float32)
    x = np.concatenate([x, x[:5]])  # exact duplicates at other indices
    y = np.concatenate([rng.integers(0, 4, 15), rng.integers(0, 4, 5)])
    check(x, y, block_size=4)
    # a duplicate of the query with the same label is a hit at rank 1
    x2 = np.array([[1, 0], [1, 0], [0, 1], [0.5, 0.5]], np.float32)
    assert recall_at_k(torch.tensor(x2), [0, 0, 1, 1], ks=(1,))[1] == 0.75


def test_exact_ties_broken_by_gallery_index():
    # quantised embeddings: many exact ties, across block borders
    rng = np.random.default_rng(2)
    x = rng.integers(-1, 2, size=(40, 3)).astype(np.float32)
    x[x.sum(1) == 0] = 1.0
    y = rng.integers(0, 5, 40)
    for bs in (1, 2, 5, 13, 40):
        check(x, y, ks=(1, 2, 3, 4, 8), block_size=bs)
    # hand case: for query 0, items 1 (class 1) and 2 (class 0) tie at similarity 0;
    # index 1 ranks first, so query 0 misses at K=1 and hits at K=2
    x3 = np.array([[1, 0], [0, 1], [0, 1], [-1, 0]], np.float32)
    y3 = np.array([0, 1, 0, 1])
    assert list(brute_ranking(x3, 0, exclude=0)[:2]) == [1, 2]
    sims, idx = knn_leave_one_out(torch.tensor(x3), k=3, block_size=1)
    assert idx[0, :2].tolist() == [1, 2]
    res = evaluate_retrieval(torch.tensor(x3), y3, ks=(1, 2), block_size=1)
    assert res.recall == pytest.approx(brute(x3, y3, (1, 2))[0])


def test_singleton_classes_excluded_and_counted():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    y = np.array([0, 0, 0, 1, 1, 2, 3, 4, 4, 4, 5, 6])  # classes 2, 3, 5, 6 are singletons
    res = check(x, y)
    assert res.num_excluded == 4 and res.num_queries == 8


def test_k_larger_than_gallery():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    res = check(x, y, ks=(1, 5, 16, 32))
    assert res.recall[16] == res.recall[32] == 1.0  # whole gallery: every query has a match


def test_two_items_and_one_item():
    assert recall_at_k(torch.tensor([[1.0, 0], [0, 1.0]]), [3, 3], ks=(1,)) == {1: 1.0}
    res = evaluate_retrieval(torch.tensor([[1.0, 0]]), [0], ks=(1,))
    assert res.num_queries == 0 and res.num_excluded == 1 and np.isnan(res.recall[1])


def test_map_at_r_hand_case():
    # q0 (class 0, R=2): ranking 1 (A), 3 (B), 2 (A) -> AP@2 = (1/2)(1/1 + 0) = 0.5
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.4]], np.float32)
    y = np.array([0, 0, 0, 1])
    ranking = brute_ranking(x, 0, exclude=0)
    assert list(ranking) == [1, 3, 2]
    res = evaluate_retrieval(torch.tensor(x), y, ks=(1,), map_at_r=True)
    assert res.map_at_r == pytest.approx(brute(x, y, (1,))[1])
    assert map_at_r(torch.tensor(x), y) == res.map_at_r


def test_recall_is_unnormalised_input_invariant():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    y = rng.integers(0, 4, 30)
    scaled = x * rng.uniform(0.1, 10, (30, 1)).astype(np.float32)
    assert recall_at_k(torch.tensor(x), y) == recall_at_k(torch.tensor(scaled), y)


def test_knn_order_and_padding():
    x = torch.tensor([[1.0, 0], [0.8, 0.6], [0, 1]])
    sims, idx = knn_leave_one_out(x, k=5, block_size=2)
    assert idx.tolist() == [[1, 2], [0, 2], [1, 0]]
    assert sims[0, 0] == pytest.approx(0.8)


def test_query_gallery_cross_model_matches_brute_force():
    rng = np.random.default_rng(6)
    q = rng.normal(size=(25, 4)).astype(np.float32)
    g = q + rng.normal(scale=0.5, size=q.shape).astype(np.float32)  # "old model"
    y = rng.integers(0, 5, 25)
    res = evaluate_query_gallery(torch.tensor(q), y, torch.tensor(g), y, ks=(1, 2, 4),
                                 map_at_r=True, block_size=6)
    hits = {k: [] for k in (1, 2, 4)}
    for i in range(25):
        ranking = brute_ranking(q, i, gallery=g, exclude=i)
        rel = y[ranking] == y[i]
        if rel.any():
            for k in hits:
                hits[k].append(rel[:k].any())
    assert res.recall == pytest.approx({k: np.mean(v) for k, v in hits.items()}, abs=1e-12)
    # identical models = leave-one-out on one set
    same = evaluate_query_gallery(torch.tensor(q), y, torch.tensor(q), y, map_at_r=True)
    loo = evaluate_retrieval(torch.tensor(q), y, map_at_r=True)
    assert same.recall == loo.recall and same.map_at_r == pytest.approx(loo.map_at_r)
    # a separate gallery without shared images
    other = evaluate_query_gallery(torch.tensor(q[:10]), y[:10], torch.tensor(g[10:]), y[10:],
                                   exclude_same_index=False)
    assert 0.0 <= other.recall[1] <= 1.0


def test_equals_pytorch_metric_learning_precision_at_1():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(7)
    centers = rng.normal(size=(10, 16))
    y = rng.integers(0, 10, 300)
    x = (centers[y] + rng.normal(scale=1.2, size=(300, 16))).astype(np.float32)
    xt = torch.nn.functional.normalize(torch.tensor(x), dim=1)
    calc = AccuracyCalculator(include=("precision_at_1",), k=1, device=torch.device("cpu"))
    pml = calc.get_accuracy(xt, torch.tensor(y), ref_includes_query=True)["precision_at_1"]
    assert recall_at_k(xt, y, ks=(1,))[1] == pytest.approx(pml, abs=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="positive"):
        recall_at_k(torch.zeros(3, 2), [0, 0, 1], ks=(0,))
    with pytest.raises(ValueError, match="labels"):
        recall_at_k(torch.zeros(3, 2), [0, 0])
