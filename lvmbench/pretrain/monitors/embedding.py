"""Collapse diagnostics of a batch of embeddings (N, D).

- ``std``: mean per-dimension standard deviation of the L2-normalised embeddings × √D (SimSiam §4.1:
  ≈ 1 for embeddings spread isotropically over the sphere, 0 for complete collapse);
- ``effective_rank``: exp of the entropy of the normalised singular values of the centred batch
  (Roy & Vetterli 2007; RankMe, Garrido et al. 2023, uses the same measure uncentred). 1 = all
  variation along one direction, at most min(N − 1, D); 0 when the rows are identical;
- ``collapsed``: complete collapse, the outputs no longer depend on the input (std < 0.01 or
  effective rank < 1.5). Dimensional collapse short of that shows as a falling effective rank.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

COLLAPSE_STD = 0.01
COLLAPSE_RANK = 1.5


def effective_rank(z: torch.Tensor) -> float:
    z = z.detach().double()
    zc = z - z.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(zc)
    # Identical rows leave only rounding noise, whose spectrum is flat: call it rank 0, not "high".
    if float(s.sum()) <= 1e-6 * max(float(z.norm()), 1e-30):
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def embedding_stats(z: torch.Tensor) -> dict[str, float | bool | int]:
    """{"std", "effective_rank", "max_rank", "dim", "collapsed"} of an (N, D) batch."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"embedding stats need an (N, D) batch with N >= 2, got {tuple(z.shape)}")
    n, d = z.shape
    zn = F.normalize(z.detach().double(), dim=1)
    std = float(zn.std(dim=0).mean()) * math.sqrt(d)
    rank = effective_rank(z)
    return {
        "std": std,
        "effective_rank": rank,
        "max_rank": min(n - 1, d),
        "dim": d,
        "collapsed": bool(std < COLLAPSE_STD or rank < COLLAPSE_RANK),
    }
