"""NT-Xent, SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020, Eq. 1).

For two views Z, Z' (N × D) the 2N projections are L2-normalised; each one's positive is the other
view of its image and its negatives are the other 2N − 2 projections of the batch (both views):

    ℓ(i, j) = −log  exp(s_ij / τ) / Σ_{k ≠ i} exp(s_ik / τ),   s = cosine similarity,

averaged over all 2N anchors (both directions, as SimCLR's loss over ``2N`` examples).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, top-1 accuracy of picking the positive among the 2N − 1 candidates) for (N, D) views."""
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 2:
        raise ValueError(f"NT-Xent needs two (N, D) projections of one shape with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z1.shape[0]
    # float32 at least: logits of 1/τ ≈ 5–10 lose the positive's margin in bf16
    dtype = z1.dtype if z1.dtype in (torch.float32, torch.float64) else torch.float32
    z = F.normalize(torch.cat([z1, z2]).to(dtype), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # k ≠ i
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    loss = F.cross_entropy(logits, target)
    with torch.no_grad():
        acc = (logits.argmax(dim=1) == target).float().mean()
    return loss, acc
