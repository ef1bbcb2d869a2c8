"""Recall@K and mAP@R by exact blocked k-nearest-neighbour search (cosine similarity).

Definitions (DESIGN.md, "Metrics"):

* every image of a set is a query; its gallery is every OTHER image of the set, the query
  itself removed by index (so duplicated embeddings at other indices stay in the gallery);
* neighbours are ranked by cosine similarity, ties broken by gallery index (lower first),
  which makes every number reproducible and equal to a brute-force stable sort;
* Recall@K: 1 if any of the K nearest shares the query's class; K beyond the gallery size
  means "the whole gallery";
* mAP@R (Musgrave et al., 2020): R = number of other images of the query's class,
  AP@R = (1/R) sum_{i<=R} P@i * rel_i;
* a query whose class has no other image (a singleton class) can never be answered: it is
  excluded from both means and counted in ``num_excluded``.

How it is fast: the N x N similarity matrix is symmetric, so it is computed block by block
over the upper triangle only (half the multiply-adds of one full N x N matmul) and each
block is used twice, for its rows (queries of block I against gallery block J) and for its
columns (queries of J against I). Only a running top-k per query is kept, so memory is
O(N k + block^2) whatever N is. Everything runs on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 8)
_SENTINEL_SIM = float("-inf")


@dataclass
class RetrievalResult:
    """Recall@K (and mAP@R) of one evaluation, with the counts behind the means."""

    recall: dict[int, float]
    map_at_r: float | None = None
    num_queries: int = 0  #: queries that entered the means
    num_excluded: int = 0  #: singleton-class queries left out
    extra: dict[str, float] = field(default_factory=dict)


# -- running top-k ------------------------------------------------------------------------
def _block_topk(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of ``sim`` (values desc, ties by column asc), exact at the border.

    ``torch.topk`` picks an arbitrary member of a tie; it only matters when the k-th and
    (k+1)-th values are equal, which is detected and those rows are redone with a stable sort.
    """
    width = sim.shape[1]
    if k >= width:
        vals, idx = torch.sort(sim, dim=1, descending=True, stable=True)
        return vals, idx
    vals, idx = torch.topk(sim, k + 1, dim=1)
    tied = vals[:, k - 1] == vals[:, k]
    vals, idx = vals[:, :k], idx[:, :k]
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        v2, i2 = torch.sort(sim[rows], dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = v2[:, :k], i2[:, :k]
    return vals, idx


def _merge(run_v: torch.Tensor, run_i: torch.Tensor, new_v: torch.Tensor, new_i: torch.Tensor,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k best of two candidate lists under (similarity desc, index asc)."""
    v = torch.cat([run_v, new_v], dim=1)
    i = torch.cat([run_i, new_i], dim=1)
    order = torch.argsort(i, dim=1)  # indices are distinct: no stability needed here
    v, i = v.gather(1, order), i.gather(1, order)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    return v.gather(1, order), i.gather(1, order)


def _prepare(embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], normalize: bool):
    x = torch.as_tensor(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be N x d, got shape {tuple(x.shape)}")
    x = x.float()
    if normalize:
        x = F.normalize(x, dim=1)
    y = torch.as_tensor(labels, device=x.device).long().reshape(-1)
    if y.numel() != x.shape[0]:
        raise ValueError(f"{x.shape[0]} embeddings but {y.numel()} labels")
    return x, y


class _RunningTopK:
    """Per-query running top-k lists, updated block by block.

    ``tau[q]`` is query q's current k-th best similarity: a gallery item below it can never
    enter q's list, so when a block is mostly below (the usual case once the lists have
    filled) only the items at or above ``tau`` are gathered, which is much cheaper than a
    top-k over the whole block (``>=``, not ``>``, keeps tied items that may win on index).
    """

    def __init__(self, n: int, k: int, device: torch.device, sentinel_index: int) -> None:
        self.k = k
        self.v = torch.full((n, k), _SENTINEL_SIM, device=device)
        self.i = torch.full((n, k), sentinel_index, dtype=torch.long, device=device)

    def update(self, rows: slice, sim: torch.Tensor, col_offset: int,
               transposed: bool = False) -> None:
        """Offer ``sim[r, c]`` (query ``rows.start + r``, gallery ``col_offset + c``).

        With ``transposed`` the queries are ``sim``'s columns: the block is scanned in its
        own memory order (a transposed scan is several times slower) and re-sorted.
        """
        k = self.k
        tau = self.v[rows, k - 1]
        n_rows = sim.shape[1] if transposed else sim.shape[0]
        if bool(torch.isneginf(tau).any()):
            r = None  # some lists are still filling: every item may enter
        else:
            mask = sim >= (tau[None, :] if transposed else tau[:, None])
            if transposed:
                c, r = mask.nonzero(as_tuple=True)
            else:
                r, c = mask.nonzero(as_tuple=True)
            if r.numel() == 0:
                return
        if r is None or r.numel() > 2 * k * n_rows:  # many candidates: dense top-k
            v, i = _block_topk(sim.T.contiguous() if transposed else sim, k)
            self.v[rows], self.i[rows] = _merge(self.v[rows], self.i[rows], v, i + col_offset,
                                                k)
            return
        if transposed:  # group the candidates by query (column)
            order = torch.sort(r, stable=True).indices
            r, c = r[order], c[order]
        counts = torch.bincount(r, minlength=n_rows)
        width = int(counts.max())
        # scatter the few candidates into a small padded matrix
        pos = torch.arange(r.numel(), device=r.device) - (counts.cumsum(0) - counts)[r]
        v = torch.full((n_rows, width), _SENTINEL_SIM, device=sim.device)
        i = torch.zeros((n_rows, width), dtype=torch.long, device=sim.device)
        v[r, pos] = sim[c, r] if transposed else sim[r, c]
        i[r, pos] = c
        self.v[rows], self.i[rows] = _merge(self.v[rows], self.i[rows], v, i + col_offset, k)


def knn_leave_one_out(
    embeddings: torch.Tensor, k: int, block_size: int = 2048, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest OTHER items of every item: (similarities, indices), both N x k.

    Sorted by similarity descending, ties by index ascending; slots beyond the gallery
    size hold similarity -inf and index N. Uses the symmetric blocked scheme above.
    """
    x, _ = _prepare(embeddings, torch.zeros(len(embeddings)), normalize)
    n = x.shape[0]
    k = max(1, min(k, n - 1)) if n > 1 else 1
    top = _RunningTopK(n, k, x.device, n)
    starts = list(range(0, n, block_size))
    for bi, a in enumerate(starts):
        xa = x[a:a + block_size]
        for b in starts[bi:]:
            sim = xa @ x[b:b + block_size].T
            if a == b:
                sim.fill_diagonal_(_SENTINEL_SIM)  # the query itself, removed by index
            top.update(slice(a, a + sim.shape[0]), sim, b)
            if a != b:
                top.update(slice(b, b + sim.shape[1]), sim, a, transposed=True)
    # the self slot carries -inf with a real index: make every -inf slot an empty one
    top.i[top.v == _SENTINEL_SIM] = n
    return top.v, top.i


def knn_query_gallery(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, block_size: int = 2048,
    exclude_same_index: bool = False, normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest gallery items of every query (similarity desc, index asc).

    ``exclude_same_index`` drops gallery item i for query i: the two sets are the same
    images embedded by two models (cross-model evaluation).
    """
    q, _ = _prepare(queries, torch.zeros(len(queries)), normalize)
    g, _ = _prepare(gallery, torch.zeros(len(gallery)), normalize)
    nq, ng = q.shape[0], g.shape[0]
    if exclude_same_index and nq != ng:
        raise ValueError("exclude_same_index needs queries and gallery of the same images")
    k = max(1, min(k, ng - (1 if exclude_same_index else 0)))
    top = _RunningTopK(nq, k, q.device, ng)
    for a in range(0, nq, block_size):
        rows = slice(a, min(a + block_size, nq))
        for b in range(0, ng, block_size):
            sim = q[rows] @ g[b:b + block_size].T
            if exclude_same_index and a < b + sim.shape[1] and b < a + sim.shape[0]:
                r = torch.arange(max(a, b), min(a + sim.shape[0], b + sim.shape[1]),
                                 device=q.device)
                sim[r - a, r - b] = _SENTINEL_SIM
            top.update(rows, sim, b)
    top.i[top.v == _SENTINEL_SIM] = ng
    return top.v, top.i


# -- metrics from neighbour lists ---------------------------------------------------------
def _scores(nn_idx: torch.Tensor, q_labels: torch.Tensor, g_labels: torch.Tensor,
            positives: torch.Tensor, ks: Sequence[int], with_map: bool) -> RetrievalResult:
    """Recall@K / mAP@R from sorted neighbour indices; ``positives[q]`` = R of query q."""
    n_gallery = g_labels.shape[0]
    padded = torch.cat([g_labels, g_labels.new_full((1,), -1)])  # index n_gallery = empty
    match = padded[nn_idx.clamp(max=n_gallery)] == q_labels[:, None]
    match &= nn_idx < n_gallery
    valid = positives > 0
    n_valid = int(valid.sum())
    recall = {}
    for k in ks:
        hit = match[:, :k].any(dim=1)
        # an exact fraction of counts, not a float32 mean
        recall[int(k)] = int(hit[valid].sum()) / n_valid if n_valid else float("nan")
    m_ap = None
    if with_map:
        width = match.shape[1]
        ranks = torch.arange(1, width + 1, device=match.device)
        within_r = ranks[None, :] <= positives[:, None]
        rel = (match & within_r).double()
        prec = rel.cumsum(dim=1) / ranks[None, :]
        ap = (prec * rel).sum(dim=1) / positives.clamp(min=1)
        m_ap = float(ap[valid].mean()) if n_valid else float("nan")
    return RetrievalResult(recall, m_ap, n_valid, int((~valid).sum()))


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) <= 0:
        raise ValueError(f"every K must be a positive integer, got {ks}")
    return ks


def evaluate_retrieval(
    embeddings: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    map_at_r: bool = False,
    block_size: int = 2048,
    normalize: bool = True,
) -> RetrievalResult:
    """Leave-one-out Recall@K (and mAP@R) of one set; see the module docstring."""
    ks = _check_ks(ks)
    x, y = _prepare(embeddings, labels, normalize)
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    positives = counts[inverse] - 1  # other images of the query's class
    k = max(ks)
    if map_at_r and y.numel():
        k = max(k, int(positives.max()))
    if x.shape[0] < 2:
        return RetrievalResult({kk: float("nan") for kk in ks}, float("nan") if map_at_r
                               else None, 0, int(x.shape[0]))
    _, idx = knn_leave_one_out(x, k, block_size=block_size, normalize=False)
    return _scores(idx, y, y, positives, ks, map_at_r)


def recall_at_k(
    embeddings: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    block_size: int = 2048,
) -> dict[int, float]:
    """Leave-one-out Recall@K for each K in ``ks`` (cosine similarity, self removed by index)."""
    return evaluate_retrieval(embeddings, labels, ks, block_size=block_size).recall


def map_at_r(
    embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], block_size: int = 2048
) -> float:
    """Leave-one-out mAP@R (Musgrave et al. 2020), singleton-class queries excluded."""
    result = evaluate_retrieval(embeddings, labels, (1,), map_at_r=True, block_size=block_size)
    assert result.map_at_r is not None
    return result.map_at_r


def evaluate_query_gallery(
    queries: torch.Tensor,
    query_labels: torch.Tensor | Sequence[int],
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    map_at_r: bool = False,
    exclude_same_index: bool = True,
    block_size: int = 2048,
) -> RetrievalResult:
    """Recall@K of queries against a separate gallery (cross-model, backfill-free).

    With ``exclude_same_index`` (default) query i and gallery item i are the same image
    embedded by two models (new model for queries, old model for the gallery), and that
    pair is not counted as a match, exactly as the leave-one-out protocol.
    """
    ks = _check_ks(ks)
    q, ql = _prepare(queries, query_labels, True)
    g, gl = _prepare(gallery, gallery_labels, True)
    same_class = (gl[None, :] == ql[:, None]) if ql.numel() * gl.numel() <= 5e7 else None
    if same_class is not None:
        positives = same_class.sum(dim=1)
    else:
        positives = torch.stack([(gl == c).sum() for c in ql])
    if exclude_same_index:
        positives = positives - (ql == gl).long()
    k = max(ks)
    if map_at_r and positives.numel():
        k = max(k, int(positives.max()))
    _, idx = knn_query_gallery(q, g, k, block_size, exclude_same_index, normalize=False)
    return _scores(idx, ql, gl, positives, ks, map_at_r)
