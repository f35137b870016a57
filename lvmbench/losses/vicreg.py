"""VICReg term (Bardes et al.), as used by MLVICX (reference §4.2).

For projections Z, Z' (N × D):

- invariance ``s = mean((Z − Z')²)`` (``F.mse_loss``);
- variance ``v(Z) = mean_d relu(γ − sqrt(Var(Z_{·d}) + ε))``, combined as ``[v(Z) + v(Z')] / 2``
  (halved as in the VICReg code, PML and MLVICX: state this when comparing μ with a paper);
- covariance ``c(Z) = Σ_{i≠j} Cov(Z)_{ij}² / D``, ``Cov = Z̄ᵀZ̄ / (N − 1)``, combined as c(Z) + c(Z');
- ``ℓ = λ s + μ [v(Z) + v(Z')]/2 + ν [c(Z) + c(Z')]`` with λ = 25, μ = 25, ν = 1, γ = 1, ε = 1e-4.

A covariance term going to 0 together with the variance term at μ(γ − √ε) signals collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class VICRegTerms:
    total: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor

    def logs(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(getattr(self, k).detach()) for k in ("total", "invariance", "variance", "covariance")}


def _variance(z: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off / d


def vicreg_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """Weighted VICReg terms (each already multiplied by its coefficient) and their sum."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"VICReg needs two (N, D) projections of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("VICReg needs a batch of at least 2 (variance and covariance over the batch)")
    dtype = z1.dtype if z1.dtype in (torch.float32, torch.float64) else torch.float32
    z1, z2 = z1.to(dtype), z2.to(dtype)
    inv = sim_coeff * F.mse_loss(z1, z2)
    var = std_coeff * (_variance(z1, gamma, eps) + _variance(z2, gamma, eps)) / 2
    cov = cov_coeff * (_covariance(z1) + _covariance(z2))
    return VICRegTerms(inv + var + cov, inv, var, cov)


class VICRegLoss(nn.Module):
    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0, gamma: float = 1.0, eps: float = 1e-4):
        super().__init__()
        self.kw = dict(sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff, gamma=gamma, eps=eps)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return vicreg_terms(z1, z2, **self.kw).total
