"""The gallery a deployed search holds: embedded once, when its images arrive, never re-indexed.

A deployed image search embeds each image once, when it arrives; re-embedding the whole
gallery after a model update ("backfilling") is the expensive step continual learning is
meant to save. :class:`StoredGallery` (owned by :class:`metrics.plugins.RetrievalMetrics`)
measures what such a search sees, beside the re-embedded ("union of seen") value:

* **Never re-indexed** (after experience t): the gallery part of experience j <= t holds
  the embeddings of j's test images computed by the model after experience j, stored
  once (the vectors an index would hold); the queries are the test images of every seen
  class embedded by the current model. Each test image is a query and, through its
  stored vector, a gallery item; its own stored vector is left out by index (the
  protocol of the union value, so the two differ only in which model embedded the
  gallery). Recall@K for every K and mAP@R, over all queries and split into old-class
  (experiences < t) and new-class (experience t) queries, and the share of each query's
  top K (K = the largest evaluated) that comes from each experience's part, beside that
  part's share of the gallery.
* **Negative flips** between consecutive models (PCT, Yan et al. CVPR 2021; RACT, Zhang
  et al. ICLR 2022): over the queries of the classes seen before experience t, against
  the same gallery images (parts 0..t-1, their stored vectors as they are after the
  update), the fraction answered right at Recall@1 before the update (by model t-1, in the
  never-re-indexed evaluation after t-1) and wrong after (by model t). Positive flips, the
  reverse, beside it. A query whose class has no other image is left out of both.
* **Compatibility matrix** (:mod:`metrics.compatibility`): M[i][j], Recall@1 of model i's
  queries against model j's gallery on the test classes seen by step j, and S[i][j], model
  i's self-test on the same set (the backfilled value).

A strategy plugin may update stored gallery vectors without their images (drift
compensation: ``sdc``, ``ldc``): a plugin with ``update_gallery(vectors) -> vectors`` and
``gallery_update_step`` (the experience whose data computed the current update) has every
stored part of an earlier experience replaced by its update, once per experience, before
the evaluation after that experience; the store records which parts it updated. The
compatibility matrix is of the models alone and never uses updated vectors.

Nothing here draws a random number or changes the model: turning this evaluation on or
off changes no other number of a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from metrics.retrieval import (
    RetrievalResult,
    _scores,
    evaluate_query_gallery,
    knn_query_gallery,
)

#: the Recall@K of the compatibility matrix (BCT and CL2R use top-1)
COMPATIBILITY_K = 1


def _plain(res: RetrievalResult) -> dict[str, Any]:
    return {"recall": dict(res.recall), "map_at_r": res.map_at_r,
            "queries": res.num_queries}


def mixed_gallery(queries: torch.Tensor, labels: torch.Tensor, gallery: torch.Tensor,
                  parts: torch.Tensor, ks: Sequence[int], map_at_r: bool = True,
                  old: torch.Tensor | None = None, block_size: int = 2048
                  ) -> dict[str, Any]:
    """Query i (embedded by the current model) against the stored ``gallery`` (row i the
    same image's stored vector, left out by index); ``parts[i]`` is the experience row i
    belongs to, ``old`` marks the old-class queries. Returns the plain results: ``all``,
    ``old``, ``new`` (recall per K, mAP@R, queries counted), the top-K shares per part
    (``share``, ``share_old``, ``share_new``; K = ``top_k``), each part's share of the
    gallery (``gallery_share``) and per query whether its nearest item shares its class
    (``hit``, a bool tensor; singleton-class queries are False and ``valid`` False)."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    n = labels.numel()
    same = labels[None, :] == labels[:, None]
    positives = same.sum(dim=1) - 1
    ks = tuple(int(k) for k in ks)
    k = max(ks)
    if map_at_r and n:
        k = max(k, int(positives.max()))
    _, idx = knn_query_gallery(queries, gallery, k, block_size, exclude_same_index=True)
    idx, gl = idx.cpu(), labels
    positives = positives.cpu()
    old = torch.zeros(n, dtype=torch.bool) if old is None else old.cpu().bool()
    out: dict[str, Any] = {"all": _plain(_scores(idx, labels, gl, positives, ks, map_at_r))}
    for name, rows in (("old", old), ("new", ~old)):
        out[name] = (_plain(_scores(idx[rows], labels[rows], gl, positives[rows], ks,
                                    map_at_r)) if bool(rows.any()) else None)
    top = min(max(ks), max(n - 1, 1))
    out["top_k"] = top
    parts = torch.as_tensor(parts).long().cpu()
    n_parts = int(parts.max()) + 1 if n else 0
    near = idx[:, :top]
    valid_slot = near < n
    part_of = torch.where(valid_slot, parts[near.clamp(max=max(n - 1, 0))],
                          torch.full_like(near, -1))
    per_query = torch.stack([(part_of == j).sum(dim=1) for j in range(n_parts)], dim=1) \
        .double() / valid_slot.sum(dim=1, keepdim=True).clamp(min=1).double()
    for name, rows in (("share", torch.ones(n, dtype=torch.bool)), ("share_old", old),
                       ("share_new", ~old)):
        out[name] = per_query[rows].mean(dim=0).tolist() if bool(rows.any()) else None
    out["gallery_share"] = [float((parts == j).sum()) / n for j in range(n_parts)]
    first = labels[idx[:, 0].clamp(max=max(n - 1, 0))] == labels
    valid = positives > 0
    out["hit"] = first & (idx[:, 0] < n) & valid
    out["valid"] = valid
    return out


def top1_hits(queries: torch.Tensor, labels: torch.Tensor, gallery: torch.Tensor,
              block_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query: whether its nearest gallery item (row i left out) shares its class, and
    whether the query can be answered at all (its class has another image)."""
    labels = torch.as_tensor(labels).long().reshape(-1).cpu()
    n = labels.numel()
    valid = (labels[None, :] == labels[:, None]).sum(dim=1) > 1
    if n < 2:
        return torch.zeros(n, dtype=torch.bool), valid
    _, idx = knn_query_gallery(queries, gallery, 1, block_size, exclude_same_index=True)
    idx = idx[:, 0].cpu()
    return (idx < n) & (labels[idx.clamp(max=n - 1)] == labels) & valid, valid


def _none_for_nan(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON's "undefined")."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _none_for_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_none_for_nan(v) for v in obj]
    return obj


class StoredGallery:
    """The stored galleries of one run and what they measure (see the module docstring)."""

    def __init__(self, ks: Sequence[int], map_at_r: bool = True, block_size: int = 2048,
                 never_reindexed: bool = True, compatibility: bool = True) -> None:
        self.ks = tuple(int(k) for k in ks)
        self.map_at_r = map_at_r
        self.block_size = block_size
        self.never_reindexed = never_reindexed
        self.compatibility = compatibility
        self.reset()

    @property
    def active(self) -> bool:
        """Whether anything is measured."""
        return self.never_reindexed or self.compatibility

    def reset(self) -> None:
        """Forget everything (a new run)."""
        #: experience -> the stored vectors of its test images (embedded by the model after
        #: that experience; updated since by a drift-compensating strategy, if any)
        self.parts: dict[int, torch.Tensor] = {}
        self.labels: dict[int, torch.Tensor] = {}
        #: model i -> experience e <= i -> model i's plain embeddings of e's test images
        self.models: dict[int, dict[int, torch.Tensor]] = {}
        #: step -> the plain results of the never-re-indexed evaluation after it
        self.steps: dict[int, dict[str, Any]] = {}
        #: the Recall@1 hits (and answerable queries) of the last never-re-indexed step
        self.last_hits: tuple[int, torch.Tensor, torch.Tensor] | None = None
        #: step -> the experiences whose stored vectors were updated before its evaluation
        self.updated: dict[int, list[int]] = {}
        self.updated_through = -1
        self.updater: str | None = None
        #: (i, j) -> M[i][j], S[i][j]
        self.matrix: dict[tuple[int, int], float] = {}
        self.self_test: dict[tuple[int, int], float] = {}
        #: False when a run resumed from a checkpoint that did not hold this state: the
        #: steps before it are missing, so nothing is reported
        self.complete = True

    # -- the evaluation after experience ``i`` ---------------------------------------------
    def update(self, strategy: Any, i: int,
               passes: dict[int, tuple[torch.Tensor, torch.Tensor]],
               transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> bool:
        """Measure after experience ``i``: ``passes`` holds every evaluated experience's
        (embeddings, labels) by the current model, ``transform`` the strategy's query
        transform. False when the pass lacks a seen experience (nothing measured)."""
        seen = list(range(i + 1))
        if not self.active or not all(j in passes for j in seen):
            return False
        if self.never_reindexed:
            self._apply_updates(strategy, i)
            if i not in self.parts:
                self.parts[i] = passes[i][0].detach().float().cpu().clone()
                self.labels[i] = passes[i][1].detach().long().cpu().clone()
            if all(j in self.parts for j in seen):
                self._never_reindexed(i, passes, transform)
            else:
                self.complete = False
        if self.compatibility:
            self.models[i] = {j: passes[j][0].detach().float().cpu().clone() for j in seen}
            self._compatibility(i, passes, transform)
        return True

    def _apply_updates(self, strategy: Any, i: int) -> None:
        """Replace the stored parts of experiences before ``i`` by a drift-compensating
        plugin's update computed from experience ``i``'s data (once per experience)."""
        if i <= self.updated_through:
            return
        for plugin in getattr(strategy, "plugins", ()) or ():
            fn = getattr(plugin, "update_gallery", None)
            if not callable(fn) or getattr(plugin, "gallery_update_step", None) != i:
                continue
            for j in sorted(p for p in self.parts if p < i):
                self.parts[j] = fn(self.parts[j]).detach().float().cpu()
            self.updated[i] = sorted(p for p in self.parts if p < i)
            self.updated_through = i
            self.updater = str(getattr(plugin, "strategy_name", "") or type(plugin).__name__)

    def _never_reindexed(self, i: int, passes: dict[int, tuple[torch.Tensor, torch.Tensor]],
                         transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        seen = list(range(i + 1))
        q = torch.cat([passes[j][0] for j in seen])
        if transform is not None:
            q = transform(q)
        lab = torch.cat([self.labels[j] for j in seen])
        g = torch.cat([self.parts[j] for j in seen]).to(q.device)
        part = torch.cat([torch.full((len(self.labels[j]),), j, dtype=torch.long)
                          for j in seen])
        old = part < i
        res = mixed_gallery(q, lab, g, part, self.ks, self.map_at_r, old, self.block_size)
        hit, valid = res.pop("hit"), res.pop("valid")
        step: dict[str, Any] = {**res, "nfr": None, "pfr": None, "flip_queries": 0}
        if i > 0 and self.last_hits is not None and self.last_hits[0] == i - 1:
            n_old = int(old.sum())
            before, answerable = self.last_hits[1], self.last_hits[2]
            if len(before) == n_old:
                after, _ = top1_hits(q[:n_old], lab[:n_old], g[:n_old], self.block_size)
                rows = answerable & valid[:n_old]
                n = int(rows.sum())
                if n:
                    step["nfr"] = int((before & ~after & rows).sum()) / n
                    step["pfr"] = int((~before & after & rows).sum()) / n
                step["flip_queries"] = n
        self.last_hits = (i, hit.cpu(), valid.cpu())
        self.steps[i] = step

    def _compatibility(self, i: int, passes: dict[int, tuple[torch.Tensor, torch.Tensor]],
                       transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        for j in range(i + 1):
            if j not in self.models:
                self.complete = False
                continue
            cols = list(range(j + 1))
            plain = torch.cat([passes[e][0] for e in cols])
            q = transform(plain) if transform is not None else plain
            lab = torch.cat([passes[e][1] for e in cols])
            for store, gallery in ((self.matrix, torch.cat([self.models[j][e] for e in cols])),
                                   (self.self_test, plain)):
                if store is self.self_test and j == i:
                    store[(i, j)] = self.matrix[(i, j)]
                    continue
                res = evaluate_query_gallery(q, lab, gallery.to(q.device), lab,
                                             (COMPATIBILITY_K,), False, True, self.block_size)
                store[(i, j)] = res.recall[COMPATIBILITY_K]

    # -- results ----------------------------------------------------------------------------
    def matrices(self) -> tuple[list[list[float]], list[list[float]]]:
        """M and S as T x T lists (NaN where not measured)."""
        idx = [i for i, _ in self.matrix]
        t = max(idx) + 1 if idx else 0
        m = [[self.matrix.get((i, j), float("nan")) for j in range(t)] for i in range(t)]
        s = [[self.self_test.get((i, j), float("nan")) for j in range(t)] for i in range(t)]
        return m, s

    def payload(self, num_experiences: int) -> dict[str, Any]:
        """The ``never_reindexed`` and ``compatibility`` sections of a cell's result (empty
        when nothing complete was measured)."""
        from metrics.compatibility import compatibility_summary

        out: dict[str, Any] = {}
        t = num_experiences
        if not self.complete:
            return out
        if self.never_reindexed and len(self.steps) == t:
            steps = [self.steps[i] for i in range(t)]

            def curve(key: str, part: str = "all") -> dict[str, Any]:
                rows = [s[part] for s in steps]
                got: dict[str, Any] = {"recall": {str(k): [r["recall"][k] if r else None
                                                           for r in rows] for k in self.ks},
                                       "queries": [r["queries"] if r else 0 for r in rows]}
                if self.map_at_r:
                    got["map_at_r"] = [r["map_at_r"] if r else None for r in rows]
                return got

            def square(key: str) -> list[list[float | None]]:
                return [[(s[key][j] if s[key] is not None and j < len(s[key]) else None)
                         for j in range(t)] for s in steps]

            everything = curve("all")
            out["never_reindexed"] = {
                "recall": everything["recall"],
                **({"map_at_r": everything["map_at_r"]} if self.map_at_r else {}),
                "old_classes": curve("old", "old"), "new_classes": curve("new", "new"),
                "top_k": steps[-1]["top_k"],
                "top_k_share": square("share"), "top_k_share_old": square("share_old"),
                "top_k_share_new": square("share_new"), "gallery_share": square("gallery_share"),
                "negative_flip_rate": [s["nfr"] for s in steps],
                "positive_flip_rate": [s["pfr"] for s in steps],
                "flip_queries": [s["flip_queries"] for s in steps],
                "gallery_vectors": (f"updated by {self.updater} (drift compensation)"
                                    if self.updater else "as embedded"),
                "updated_parts": [self.updated.get(i, []) for i in range(t)],
            }
        m, s = self.matrices()
        if self.compatibility and len(m) == t and t:
            out["compatibility"] = {"k": COMPATIBILITY_K, "matrix": m, "self_test": s,
                                    **compatibility_summary(m, s)}
        return _none_for_nan(out)

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain values."""
        last = None if self.last_hits is None else list(self.last_hits)
        return {"parts": self.parts, "labels": self.labels, "models": self.models,
                "steps": {i: {k: v for k, v in s.items()} for i, s in self.steps.items()},
                "last_hits": last, "updated": self.updated,
                "updated_through": self.updated_through, "updater": self.updater,
                "matrix": self.matrix, "self_test": self.self_test,
                "complete": self.complete}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`; None (a checkpoint written before this state existed)
        leaves the run incomplete, so nothing is reported for it."""
        self.reset()
        if state is None:
            self.complete = False
            return
        self.parts, self.labels = dict(state["parts"]), dict(state["labels"])
        self.models = {i: dict(v) for i, v in state["models"].items()}
        self.steps = {int(i): dict(s) for i, s in state["steps"].items()}
        last = state["last_hits"]
        self.last_hits = None if last is None else (int(last[0]), last[1], last[2])
        self.updated = {int(i): list(v) for i, v in state["updated"].items()}
        self.updated_through = int(state["updated_through"])
        self.updater = state["updater"]
        self.matrix, self.self_test = dict(state["matrix"]), dict(state["self_test"])
        self.complete = bool(state["complete"])
