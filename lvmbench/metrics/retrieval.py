"""Retrieval metrics on embeddings: Recall@K, R-precision, MAP@R (query set = gallery, self excluded).

With ``groups`` (patient/volume keys, or any key shared by near-copies such as byte-identical
images), every gallery item of the query's own group is excluded too, not only the query: another
image of the same patient is retrieved for being the same patient, not for showing the same
finding, and would inflate every metric. R then counts same-class items outside the group; a
query with none is left out like a lone query. Without ``groups`` each item is its own group.

Similarity is the cosine of L2-normalised embeddings. Recall@K follows the official MS-loss
``RetMetric``: query i is a hit at K when fewer than K other-class items are *strictly* more
similar than its most similar same-class item, so ties count as hits. A query whose class has no
other member cannot be retrieved; it is left out of every mean and counted (as
pytorch-metric-learning's ``AccuracyCalculator`` leaves out "lone" queries; ``RetMetric`` would
crash on it). R-precision and MAP@R (Musgrave et al. 2020) use R = the number of same-class items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

DEFAULT_KS = (1, 2, 4, 8)


@dataclass
class RetrievalResult:
    ks: tuple[int, ...]
    hits: np.ndarray  # (n, len(ks)) bool; rows of queries without a positive are False
    has_positive: np.ndarray  # (n,) bool
    r_precision: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,), nan without positive
    map_at_r: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def metrics(self, prefix: str = "") -> dict[str, float]:
        valid = self.has_positive
        out: dict[str, float] = {}
        for c, k in enumerate(self.ks):
            out[f"{prefix}recall@{k}"] = float(self.hits[valid, c].mean()) if valid.any() else float("nan")
        if self.r_precision.size:
            out[f"{prefix}r_precision"] = float(np.nanmean(self.r_precision)) if valid.any() else float("nan")
            out[f"{prefix}map@r"] = float(np.nanmean(self.map_at_r)) if valid.any() else float("nan")
        return out


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float64 stays float64 (tests against references); anything else is computed in float32."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t if t.dtype == torch.float64 else t.float()


def group_codes(groups: Sequence[object] | np.ndarray | None, n: int) -> torch.Tensor:
    """(n,) integer code per item, equal within a group; ``None``: every item its own group."""
    if groups is None:
        return torch.arange(n)
    keys = np.asarray([str(g) for g in groups], dtype=object)
    if len(keys) != n:
        raise ValueError(f"{n} embeddings but {len(keys)} groups")
    return torch.from_numpy(np.unique(keys, return_inverse=True)[1].reshape(-1).astype(np.int64))


@torch.no_grad()
def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    with_map: bool = True,
    chunk: int = 1024,
    groups: Sequence[object] | np.ndarray | None = None,
) -> RetrievalResult:
    """Recall@K (and R-precision, MAP@R) of every item as a query against all items outside its
    own group (``groups``; default: all the others)."""
    x = _as_tensor(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, d), got shape {tuple(x.shape)}")
    y = (labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))).long()
    if len(y) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(y)} labels")
    ks = tuple(int(k) for k in ks)
    x = F.normalize(x, dim=1)
    n = len(x)
    gc = group_codes(groups, n)
    hits = np.zeros((n, len(ks)), dtype=bool)
    has_pos = np.zeros(n, dtype=bool)
    rprec = np.full(n, np.nan)
    mapr = np.full(n, np.nan)
    kt = torch.tensor(ks)
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype)
    for s in range(0, n, chunk):
        q = torch.arange(s, min(s + chunk, n))
        sim = x[q] @ x.T
        visible = gc[q, None] != gc[None, :]  # outside the query's group (so never the query)
        same = (y[q, None] == y[None, :]) & visible
        diff = (y[q, None] != y[None, :]) & visible
        best_pos = torch.where(same, sim, neg_inf).amax(dim=1)
        n_above = (diff & (sim > best_pos[:, None])).sum(dim=1)
        pos = same.any(dim=1)
        hits[q.numpy()] = ((n_above[:, None] < kt[None, :]) & pos[:, None]).numpy()
        has_pos[q.numpy()] = pos.numpy()
        if with_map:
            r = same.sum(dim=1)
            rmax = int(r.max()) if len(r) else 0
            if rmax == 0:
                continue
            # neighbours in order of similarity, the query's group pushed to the end
            _, order = torch.where(visible, sim, neg_inf).topk(rmax, dim=1)
            rel = same.gather(1, order).to(torch.float64)
            ranks = torch.arange(1, rmax + 1, dtype=torch.float64)
            within = ranks[None, :] <= r[:, None]
            rel = rel * within
            prec_at_i = rel.cumsum(dim=1) / ranks[None, :]
            rd = r.to(torch.float64).clamp_min(1)
            rp = rel.sum(dim=1) / rd
            ap = (prec_at_i * rel).sum(dim=1) / rd
            rprec[q.numpy()] = torch.where(pos, rp, torch.nan).numpy()
            mapr[q.numpy()] = torch.where(pos, ap, torch.nan).numpy()
    return RetrievalResult(ks, hits, has_pos, rprec if with_map else np.zeros(0), mapr if with_map else np.zeros(0))


def recall_at_k(embeddings, labels, ks: Sequence[int] = DEFAULT_KS, groups=None) -> dict[int, float]:
    """``{K: Recall@K}`` over queries that have at least one same-class item outside their group."""
    res = retrieval_metrics(embeddings, labels, ks, with_map=False, groups=groups)
    m = res.metrics()
    return {k: m[f"recall@{k}"] for k in res.ks}
