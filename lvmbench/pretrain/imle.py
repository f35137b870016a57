"""Implicit maximum-likelihood estimation (IMLE, Niepert et al. 2021) through the matching solver.

LVM-Med Algorithm 1: the forward pass solves the graph-matching problem with Gumbel(0, 1)-perturbed
vertex and edge scores, ṽ = GM(c + ε); the backward pass moves the scores against the loss gradient,
c' = c − λ·∂L/∂ṽ, solves again with the same noise, v' = GM(c' + ε), and returns (ṽ − v')/λ as
∂L/∂c (λ = 80). Edge scores are not perturbed in the backward pass (the Hamming loss does not depend
on the edge indicators ṽ_ia·ṽ_jb) but do receive a gradient, through those indicators.

One choice the paper leaves open: the scale of ∂L/∂ṽ. λ = 80 only means something relative to
per-entry gradients of ±1 (the raw Hamming loss of one graph), yet the loss handed to the
optimiser is an average over graphs (and processes). The backward pass therefore normalises each
graph's incoming gradient to a max-norm of 1 before perturbing and multiplies the result back, i.e.
it applies Algorithm 1 to each graph's own Hamming loss and then the chain rule of the average.
For the Hamming loss this is exactly the paper's rule whatever the reduction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

from lvmbench.pretrain.solver import no_autocast

Solve = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class SectionTimer:
    """Wall time per named section, synchronising CUDA so asynchronous kernels are attributed to
    the section that launched them (the progress bar's solver share and the benchmark use it)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, device: torch.device | None = None):
        sync = device is not None and device.type == "cuda"
        if sync:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                torch.cuda.synchronize(device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0

    def pop(self) -> dict[str, float]:
        out, self.totals = self.totals, {}
        return out


def gumbel_like(x: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) samples, −log(−log U), from the global RNG of ``x``'s device (checkpointed by
    the trainer, so a resumed run draws the same noise)."""
    u = torch.rand_like(x, dtype=torch.float32).clamp_(1e-12, 1 - 1e-7)
    return -torch.log(-torch.log(u))


def _outer(x: torch.Tensor) -> torch.Tensor:
    """(G, n, n) -> (G, n, n, n, n): the edge indicators x_ia·x_jb in the [i, a, j, b] layout."""
    return x[:, :, :, None, None] * x[:, None, None, :, :]


class _IMLEMatching(torch.autograd.Function):
    """Both solves and the gradient arithmetic run in float32 with autocast off, whatever the
    region ``forward`` or ``loss.backward()`` is called from (a bf16 ``λ·∂L/∂ṽ`` perturbation, or a
    backward solve that differs from the forward one, would bias the gradient)."""

    @staticmethod
    def forward(ctx, theta_v, theta_e, eps_v, eps_e, lam: float, solve: Solve, timer: SectionTimer | None):
        with no_autocast(theta_v.device):
            pert_v = theta_v.detach().float() + eps_v.float()
            pert_e = None if theta_e is None else theta_e.detach().float() + eps_e.float()
            with timer("solver", theta_v.device) if timer else _null():
                x = solve(pert_v, pert_e).float()
        ctx.save_for_backward(x, pert_v, pert_e)
        ctx.lam, ctx.solve, ctx.timer, ctx.has_e = lam, solve, timer, theta_e is not None
        ctx.dtypes = (theta_v.dtype, None if theta_e is None else theta_e.dtype)
        return x

    @staticmethod
    def backward(ctx, grad_x):
        x, pert_v, pert_e = ctx.saved_tensors
        with no_autocast(x.device):
            grad_x = grad_x.float()
            scale = grad_x.abs().amax(dim=(1, 2), keepdim=True)
            unit = grad_x / scale.clamp_min(1e-30)
            with ctx.timer("solver", x.device) if ctx.timer else _null():
                x2 = ctx.solve(pert_v - ctx.lam * unit, pert_e).float()
            grad_v = (scale * (x - x2) / ctx.lam).to(ctx.dtypes[0])
            grad_e = None
            if ctx.has_e:
                # Masking happens in the caller's graph (edge scores are multiplied by the adjacency).
                grad_e = (scale[..., None, None] * (_outer(x) - _outer(x2)) / ctx.lam).to(ctx.dtypes[1])
        return grad_v, grad_e, None, None, None, None, None


@contextmanager
def _null():
    yield


def imle_match(
    theta_v: torch.Tensor,
    theta_e: torch.Tensor | None,
    solve: Solve,
    *,
    lam: float = 80.0,
    eps_v: torch.Tensor | None = None,
    eps_e: torch.Tensor | None = None,
    timer: SectionTimer | None = None,
) -> torch.Tensor:
    """Differentiable matching: returns ṽ = solve(θ_v + ε_v, θ_e + ε_e) (G, n, n) with IMLE gradients
    for θ_v (G, n, n) and θ_e (G, n, n, n, n). ``eps_*`` are the perturbations (Gumbel noise, or a
    margin in the no-noise ablation); None means none."""
    eps_v = torch.zeros_like(theta_v) if eps_v is None else eps_v
    if theta_e is not None and eps_e is None:
        eps_e = torch.zeros_like(theta_e)
    return _IMLEMatching.apply(theta_v, theta_e, eps_v, eps_e, float(lam), solve, timer)


def hamming(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 5 per graph: x·(1 − v*) + v*·(1 − x), summed over the (n, n) entries -> (G,)."""
    return (x * (1 - target) + target * (1 - x)).sum(dim=(1, 2))
