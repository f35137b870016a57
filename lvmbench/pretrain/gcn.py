"""Graph construction (k-NN in projection space) and the shared GCN message-passing network.

LVM-Med (§3.2, appendix A): each graph's edges are the k = 5 nearest neighbours of every node in
the projector's output space, and a shared two-layer GCN of width 128 (Kipf & Welling 2017)
turns the projections z into node embeddings ẑ used by both affinities.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def knn_adjacency(z: torch.Tensor, k: int = 5) -> torch.Tensor:
    """(G, n, F) node features -> (G, n, n) symmetric 0/1 adjacency without self-loops.

    Neighbours by cosine similarity (the affinities are cosines too). The paper does not say
    whether its k-NN graph is directed; the GCN's normalisation needs a symmetric matrix, so an
    edge exists when either endpoint has the other among its k nearest. Built from detached
    features: the graph's topology is a discrete choice, not something gradients flow through.
    """
    g, n, _ = z.shape
    k = min(k, n - 1)
    if k <= 0:
        return torch.zeros(g, n, n, dtype=z.dtype, device=z.device)
    zn = F.normalize(z.detach().float(), dim=-1)
    sim = zn @ zn.transpose(1, 2)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    idx = sim.topk(k, dim=-1).indices
    adj = torch.zeros(g, n, n, dtype=z.dtype, device=z.device).scatter_(2, idx, 1.0)
    return torch.maximum(adj, adj.transpose(1, 2))


def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """Kipf–Welling renormalisation D̃^{-1/2}(A + I)D̃^{-1/2}, D̃ the degrees of A + I."""
    n = adj.shape[-1]
    a = adj + torch.eye(n, dtype=adj.dtype, device=adj.device)
    d = a.sum(dim=-1).rsqrt()
    return d[..., :, None] * a * d[..., None, :]


class GCN(nn.Module):
    """H¹ = ReLU(Â Z W₁ + b₁), Ẑ = Â H¹ W₂ + b₂. No activation on the output: ẑ feeds cosines,
    and a ReLU would confine it to the positive orthant."""

    def __init__(self, in_dim: int = 128, hidden: int = 128, out_dim: int = 128):
        super().__init__()
        # Bias after aggregation, as in Kipf & Welling: Â(ZW + b) would scale b by Â's row sums.
        self.lin1 = nn.Linear(in_dim, hidden, bias=False)
        self.lin2 = nn.Linear(hidden, out_dim, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(hidden))
        self.bias2 = nn.Parameter(torch.zeros(out_dim))

    def forward(self, z: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        a_hat = normalized_adjacency(adj.to(z.dtype))
        h = F.relu(a_hat @ self.lin1(z) + self.bias1)
        return a_hat @ self.lin2(h) + self.bias2
