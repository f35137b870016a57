"""Multi-Similarity loss with its pair miner (Wang et al., CVPR 2019), reference §2.1.

For anchor i with same-class set P_i (self excluded) and other-class set N_i, on cosine
similarities S of L2-normalised embeddings:

- mining (ε): keep negative j if ``S_ij > min_{k∈P_i} S_ik − ε``; keep positive j if
  ``S_ij < max_{k∈N_i} S_ik + ε`` (each against the *full* opposite set). A larger ε mines
  **more** pairs, not fewer (PML issue #691);
- loss: ``(1/m) Σ_i [(1/α) log(1 + Σ_{P̃_i} e^{−α(S_ik − λ)}) + (1/β) log(1 + Σ_{Ñ_i} e^{β(S_ik − λ)})]``,
  m the batch size: an anchor with no mined pair (e.g. no positive in the batch) contributes 0.

The log-sum-exp is evaluated stably and in float32 at least: ``exp(50 · 0.4)`` overflows fp16.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class MSParams:
    alpha: float = 2.0
    beta: float = 50.0
    lam: float = 0.5  # λ: "base" in PML, "thresh" in the official code
    epsilon: float = 0.1  # miner margin

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# One preset per source (reference §2.1); they disagree on β and λ, so every run records its four.
MS_PRESETS: dict[str, MSParams] = {
    "paper": MSParams(alpha=2.0, beta=50.0, lam=1.0, epsilon=0.1),
    "official": MSParams(alpha=2.0, beta=40.0, lam=0.5, epsilon=0.1),
    "pml": MSParams(alpha=2.0, beta=50.0, lam=0.5, epsilon=0.1),
}
DEFAULT_PRESET = "pml"


def ms_params(preset: str = DEFAULT_PRESET, **overrides: float) -> MSParams:
    if preset not in MS_PRESETS:
        raise ValueError(f"multi-similarity preset '{preset}' not in {sorted(MS_PRESETS)}")
    base = MS_PRESETS[preset].as_dict()
    base.update({k: float(v) for k, v in overrides.items() if v is not None})
    return MSParams(**base)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x.to(_compute_dtype(x)), dim=1)
    return x @ x.T


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean masks of all pairs; the diagonal is in neither."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


@torch.no_grad()
def ms_mine(sim: torch.Tensor, labels: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mined (positive, negative) pair masks of an (n, n) similarity matrix."""
    pos, neg = label_masks(labels)
    inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
    min_pos = torch.where(pos, sim, inf).amin(dim=1, keepdim=True)  # +inf: no positive
    max_neg = torch.where(neg, sim, -inf).amax(dim=1, keepdim=True)  # -inf: no negative
    hard_neg = neg & (sim + epsilon > min_pos)
    hard_pos = pos & (sim - epsilon < max_neg)
    return hard_pos, hard_neg


def mined_pairs(hard_pos: torch.Tensor, hard_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks -> index tuple (a1, p, a2, n), the form pytorch-metric-learning miners return."""
    a1, p = hard_pos.nonzero(as_tuple=True)
    a2, n = hard_neg.nonzero(as_tuple=True)
    return a1, p, a2, n


def _log1p_sum_exp(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log(1 + Σ_{mask} exp(z))`` per row, stable for large z; 0 for an empty row."""
    z = z.masked_fill(~mask, float("-inf"))
    zero = torch.zeros(len(z), 1, dtype=z.dtype, device=z.device)
    return torch.logsumexp(torch.cat([zero, z], dim=1), dim=1)


def multi_similarity_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    params: MSParams = MS_PRESETS[DEFAULT_PRESET],
    mine: bool = True,
) -> torch.Tensor:
    """MS loss of one batch (mean over all anchors). ``mine=False`` uses every pair, like PML's
    loss without its miner (not the paper's method)."""
    sim = cosine_matrix(embeddings)
    if mine:
        pos, neg = ms_mine(sim.detach(), labels, params.epsilon)
    else:
        pos, neg = label_masks(labels)
    pos_term = _log1p_sum_exp(-params.alpha * (sim - params.lam), pos) / params.alpha
    neg_term = _log1p_sum_exp(params.beta * (sim - params.lam), neg) / params.beta
    return (pos_term + neg_term).mean() if len(sim) else sim.sum()


class MultiSimilarityLoss(nn.Module):
    """``MultiSimilarityLoss(preset="pml", alpha=..., ...)(embeddings, labels)`` (miner included)."""

    def __init__(self, preset: str = DEFAULT_PRESET, mine: bool = True, **overrides: float):
        super().__init__()
        self.params = ms_params(preset, **overrides)
        self.preset = preset
        self.mine = mine

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return multi_similarity_loss(embeddings, labels, self.params, self.mine)

    def extra_repr(self) -> str:
        return f"preset={self.preset}, {self.params}, mine={self.mine}"
