"""Tversky projection head and Tversky similarity (Doumbouya et al., arXiv 2506.11035).

Implemented from the paper's equations (reference/similarity-seeds.md §1.1), not from the authors'
library (its licence forbids derivatives). An object ``a`` is also the set of learned features
``f_k`` (rows of the feature bank Ω) with ``a·f_k > 0``. For ``a`` against ``b``:

- intersection ``f(A∩B) = Σ_k Ψ(a·f_k, b·f_k) 1[a·f_k>0 ∧ b·f_k>0]``,
  Ψ ∈ product (default) | min | max | mean | gmean | softmin, **per feature**;
- difference ``ignorematch`` (default): ``f(A−B) = Σ_k (a·f_k) 1[a·f_k>0 ∧ b·f_k≤0]``;
  ``substractmatch``: ``f(A−B) = Σ_k (a·f_k − b·f_k) 1[a·f_k>0 ∧ b·f_k>0 ∧ a·f_k>b·f_k]``, per
  feature as the paper writes it (the library compares aggregated sums and adds the ignorematch
  term; for every combination except product/mean + ignorematch the two definitions differ, §1.3);
- contrast model ``S = θ f(A∩B) − α f(A−B) − β f(B−A)`` (θ, α, β learnable, init 1, 0.5, 0.5);
- ratio model ``S = f(A∩B) / (f(A∩B) + α f(A−B) + β f(B−A) + c)``, ``c`` = ``ratio_smoothing``
  (1.0, keeps the denominator off zero while all terms are ≥ 0).

``softmin`` is not defined in the paper text we have; here it is the softmin-weighted mean
``Σ_i v_i softmax(−v/τ)_i`` of the two values (τ = ``softmin_temperature``), which lies between
min and mean, so the intersection stays a non-negative measure.

Subject/referent convention: ``S(a, b)`` has ``a`` as subject; in the projection head the input is
the subject and the class prototype the referent. ``S`` is asymmetric unless α = β.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lvmbench.heads import HEADS

Intersection = Literal["product", "min", "max", "mean", "gmean", "softmin"]
Difference = Literal["ignorematch", "substractmatch"]
INTERSECTIONS: tuple[str, ...] = ("product", "min", "max", "mean", "gmean", "softmin")
DIFFERENCES: tuple[str, ...] = ("ignorematch", "substractmatch")

# Budget (elements) for the (n, m, K) tensor of the per-feature reductions without a matmul form.
_CHUNK_ELEMENTS = 1 << 24


def _check(intersection: str, difference: str, model: str) -> None:
    if intersection not in INTERSECTIONS:
        raise ValueError(f"intersection_reduction '{intersection}' not in {INTERSECTIONS}")
    if difference not in DIFFERENCES:
        raise ValueError(f"difference_reduction '{difference}' not in {DIFFERENCES}")
    if model not in ("contrast", "ratio"):
        raise ValueError(f"similarity_model '{model}' not in ('contrast', 'ratio')")


def psi(x: torch.Tensor, y: torch.Tensor, reduction: str, temperature: float = 1.0) -> torch.Tensor:
    """Ψ(x, y) element-wise (no membership mask)."""
    if reduction == "product":
        return x * y
    if reduction == "min":
        return torch.minimum(x, y)
    if reduction == "max":
        return torch.maximum(x, y)
    if reduction == "mean":
        return (x + y) / 2
    if reduction == "gmean":
        # only ever used where both are > 0; the clamp keeps the gradient finite elsewhere
        # (a root per factor, not of the product, so that a masked-out zero never gets an inf gradient)
        tiny = torch.finfo(x.dtype).tiny
        return x.clamp_min(tiny).sqrt() * y.clamp_min(tiny).sqrt()
    if reduction == "softmin":
        w = torch.sigmoid((y - x) / temperature)  # softmax(-[x, y]/τ)[0]
        return w * x + (1 - w) * y
    raise ValueError(reduction)


def intersection_terms(a: torch.Tensor, b: torch.Tensor, reduction: str, temperature: float = 1.0) -> torch.Tensor:
    """Per-feature ``Ψ(a_k, b_k) 1[a_k>0 ∧ b_k>0]`` for broadcastable feature scores."""
    both = (a > 0) & (b > 0)
    return torch.where(both, psi(a, b, reduction, temperature), torch.zeros((), dtype=a.dtype, device=a.device))


def difference_terms(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-feature contribution to ``f(A − B)``."""
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    if reduction == "ignorematch":
        return torch.where((a > 0) & (b <= 0), a, zero)
    return torch.where((a > 0) & (b > 0) & (a > b), a - b, zero)


def combine(inter: torch.Tensor, a_minus_b: torch.Tensor, b_minus_a: torch.Tensor, theta, alpha, beta, model: str, ratio_smoothing: float) -> torch.Tensor:
    if model == "contrast":
        return theta * inter - alpha * a_minus_b - beta * b_minus_a
    return inter / (inter + alpha * a_minus_b + beta * b_minus_a + ratio_smoothing)


def pairwise_measures(a: torch.Tensor, b: torch.Tensor, intersection: str, difference: str, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All-pairs ``f(A∩B), f(A−B), f(B−A)`` as (n, m) from feature scores a (n, K), b (m, K).

    product, mean, gmean and ignorematch factor into matmuls of masked scores; min, max, softmin
    and substractmatch need the (n, m, K) tensor, built in chunks of rows.
    """
    pa, pb = a > 0, b > 0
    ap = torch.where(pa, a, torch.zeros((), dtype=a.dtype, device=a.device))
    bp = torch.where(pb, b, torch.zeros((), dtype=b.dtype, device=b.device))
    ia, ib = pa.to(a.dtype), pb.to(b.dtype)
    inter: torch.Tensor | None = None
    if intersection == "product":
        inter = ap @ bp.T
    elif intersection == "mean":
        inter = (ap @ ib.T + ia @ bp.T) / 2
    elif intersection == "gmean":
        tiny = torch.finfo(a.dtype).tiny
        inter = torch.where(pa, a.clamp_min(tiny).sqrt(), 0.0) @ torch.where(pb, b.clamp_min(tiny).sqrt(), 0.0).T
    a_b = b_a = None
    if difference == "ignorematch":
        a_b = ap @ (1 - ib).T
        b_a = (1 - ia) @ bp.T
    if inter is not None and a_b is not None:
        return inter, a_b, b_a
    rows = max(1, _CHUNK_ELEMENTS // max(1, b.shape[0] * b.shape[1]))
    parts_i, parts_ab, parts_ba = [], [], []
    for s in range(0, a.shape[0], rows):
        x = a[s : s + rows, None, :]
        y = b[None, :, :]
        if inter is None:
            parts_i.append(intersection_terms(x, y, intersection, temperature).sum(-1))
        if a_b is None:
            parts_ab.append(difference_terms(x, y, difference).sum(-1))
            parts_ba.append(difference_terms(y, x, difference).sum(-1))
    empty = a.new_zeros(0, b.shape[0])
    if inter is None:
        inter = torch.cat(parts_i) if parts_i else empty
    if a_b is None:
        a_b = torch.cat(parts_ab) if parts_ab else empty
        b_a = torch.cat(parts_ba) if parts_ba else empty
    return inter, a_b, b_a


class _TverskyBase(nn.Module):
    def __init__(
        self,
        dim: int,
        fbank_size: int,
        similarity_model: str = "contrast",
        intersection_reduction: str = "product",
        difference_reduction: str = "ignorematch",
        normalize: bool = False,
        softmin_temperature: float = 1.0,
        ratio_smoothing: float = 1.0,
    ):
        super().__init__()
        _check(intersection_reduction, difference_reduction, similarity_model)
        self.similarity_model = similarity_model
        self.intersection_reduction = intersection_reduction
        self.difference_reduction = difference_reduction
        self.normalize = normalize
        self.softmin_temperature = softmin_temperature
        self.ratio_smoothing = ratio_smoothing
        # uniform(0, 1) initialisation: the XOR appendix found it converges most often
        self.features = nn.Parameter(torch.rand(fbank_size, dim))
        self.theta = nn.Parameter(torch.tensor(1.0))
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.beta = nn.Parameter(torch.tensor(0.5))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Feature scores ``x·f_k`` (n, K); the set of ``x`` is where they are > 0."""
        if self.normalize:
            x = nn.functional.normalize(x, dim=-1)
        return x @ self.features.T.to(x.dtype)

    def _combine(self, inter, a_b, b_a) -> torch.Tensor:
        return combine(inter, a_b, b_a, self.theta, self.alpha, self.beta, self.similarity_model, self.ratio_smoothing)

    def all_pairs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``S(x_i, y_j)`` for every pair: (n, m)."""
        inter, a_b, b_a = pairwise_measures(self.scores(x), self.scores(y), self.intersection_reduction, self.difference_reduction, self.softmin_temperature)
        return self._combine(inter, a_b, b_a)

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``S(x_i, y_i)`` for matched rows: (n,). Use this (not the diagonal of ``all_pairs``) as a
        pairwise distance, e.g. in a triplet loss (reference §1.6)."""
        a, b = self.scores(x), self.scores(y)
        inter = intersection_terms(a, b, self.intersection_reduction, self.softmin_temperature).sum(-1)
        a_b = difference_terms(a, b, self.difference_reduction).sum(-1)
        b_a = difference_terms(b, a, self.difference_reduction).sum(-1)
        return self._combine(inter, a_b, b_a)


class TverskySimilarity(_TverskyBase):
    """Learned asymmetric similarity of two inputs; ``forward(x, y)`` is the all-pairs (n, m) matrix."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.all_pairs(x, y)


class TverskyProjection(_TverskyBase):
    """Drop-in replacement for ``nn.Linear(dim, num_classes)``: logits ``S(x, π_c)`` to prototypes.

    ``input_norm`` (default ``layernorm``) standardises the input before the head. Pooled CNN
    features are non-negative, and with the uniform(0, 1) feature bank and prototypes every
    ``x·f_k`` is then positive: all features are active, both differences vanish, and the head
    degenerates to the bilinear map ``θ xᵀΩᵀΩπ`` with logits of order 1e7 (reference §1.5).
    The linear-probe protocol already standardises features with training statistics, but the
    fine-tune protocol feeds raw embeddings, so the head centres its own input. ``batchnorm``
    (per-feature, running statistics) and ``none`` are the alternatives.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        fbank_size: int = 224,
        similarity_model: str = "contrast",
        intersection_reduction: str = "product",
        difference_reduction: str = "ignorematch",
        normalize: bool = False,
        input_norm: str = "layernorm",
        logit_scale: float = 1.0,
        learnable_scale: bool = False,
        softmin_temperature: float = 1.0,
        ratio_smoothing: float = 1.0,
    ):
        super().__init__(dim, fbank_size, similarity_model, intersection_reduction, difference_reduction, normalize, softmin_temperature, ratio_smoothing)
        if input_norm == "layernorm":
            self.input_norm: nn.Module = nn.LayerNorm(dim)
        elif input_norm == "batchnorm":
            self.input_norm = nn.BatchNorm1d(dim)
        elif input_norm == "none":
            self.input_norm = nn.Identity()
        else:
            raise ValueError(f"input_norm '{input_norm}' not in ('layernorm', 'batchnorm', 'none')")
        self.prototypes = nn.Parameter(torch.rand(num_classes, dim))
        scale = torch.tensor(float(logit_scale)).log()
        self.log_scale = nn.Parameter(scale) if learnable_scale else nn.Buffer(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = self.input_norm(x.reshape(-1, shape[-1]))
        p = nn.functional.normalize(self.prototypes, dim=-1) if self.normalize else self.prototypes
        logits = self.all_pairs(x, p.to(x.dtype)) * self.log_scale.exp()
        return logits.reshape(*shape[:-1], logits.shape[-1])

    @torch.no_grad()
    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """Active-feature fractions, θ/α/β, logit magnitude on ``x`` (reported next to the metric)."""
        was = self.training
        self.eval()
        xs = self.input_norm(x.reshape(-1, x.shape[-1]))
        a = self.scores(xs)
        p = self.scores(self.prototypes)
        logits = self.forward(x)
        self.train(was)
        return {
            "active_fraction_inputs": float((a > 0).float().mean()) if a.numel() else float("nan"),
            "active_fraction_prototypes": float((p > 0).float().mean()),
            "theta": float(self.theta),
            "alpha": float(self.alpha),
            "beta": float(self.beta),
            "logit_scale": float(self.log_scale.exp()),
            "mean_abs_logit": float(logits.abs().mean()) if logits.numel() else float("nan"),
            "fbank_size": float(self.features.shape[0]),
        }


@HEADS.register("tversky")
def tversky_head(in_dim: int, num_classes: int, **hp: object) -> nn.Module:
    """``head_params: {tversky: {fbank_size: 224, intersection_reduction: product, ...}}``."""
    return TverskyProjection(in_dim, num_classes, **hp)  # type: ignore[arg-type]
