"""Symmetric triplet loss (SIRL Eq. 2, via reference §3.1) and label-derived batch triplets.

For a query (τ1, τ2, τ3) where τ1 and τ2 were judged similar:
``max(0, d(φ1, φ2) − d(φ1, φ3) + m) + max(0, d(φ2, φ1) − d(φ2, φ3) + m)``, d Euclidean
(not squared), margin m = 0.1. Both similar items take a turn as the anchor because the query
has no anchor of its own ("which two are most similar").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x - y, dim=-1)


def symmetric_triplet_loss(x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, margin: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """Per-triplet loss of (similar, similar, odd) rows; ``reduction`` mean | sum | none."""
    d12 = _dist(x1, x2)
    loss = F.relu(d12 - _dist(x1, x3) + margin) + F.relu(d12 - _dist(x2, x3) + margin)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean() if loss.numel() else loss.sum()


def batch_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (i, j, k) with i < j of one label and k of another: the similarity queries a batch
    of labelled images answers. Unordered (i, j) because the loss is already symmetric in them."""
    same = labels[:, None] == labels[None, :]
    i, j = torch.triu(same, diagonal=1).nonzero(as_tuple=True)
    if len(i) == 0:
        empty = labels.new_zeros(0)
        return empty, empty, empty
    diff = ~same[i]  # (pairs, n): candidates for the odd one out of each pair
    p, k = diff.nonzero(as_tuple=True)
    return i[p], j[p], k


class SymmetricTripletLoss(nn.Module):
    """Symmetric triplet loss over all label-derived triplets of a batch (L2-normalised by default,
    so the margin is on the unit sphere where the kNN evaluation measures cosine similarity)."""

    def __init__(self, margin: float = 0.1, normalize: bool = True):
        super().__init__()
        self.margin = margin
        self.normalize = normalize

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = embeddings if embeddings.dtype in (torch.float32, torch.float64) else embeddings.float()
        if self.normalize:
            x = F.normalize(x, dim=1)
        i, j, k = batch_triplets(labels)
        return symmetric_triplet_loss(x[i], x[j], x[k], self.margin)
