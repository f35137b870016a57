"""Batched graph-matching solvers in torch: linear assignment (exact) and quadratic assignment.

LVM-Med solves one quadratic assignment problem (QAP, Lawler form ``max_x xᵀKx`` over
permutation matrices) per 16-node graph with LPMP's Lagrange-decomposition solver, a CPU library
called graph by graph (reference §3.1 step 6). Here every graph of a step is solved at once on the
device the affinities live on, with tensors shaped (B, n, n) / (B, n², n²):

1. graduated assignment (Gold & Rangarajan 1996): softassign on the QAP's gradient with an
   annealed inverse temperature; dense batched matmuls and log-domain Sinkhorn only. Chosen over
   RRWM/spectral matching because those are random walks on the association graph and assume
   non-negative affinities, while cosines and Gumbel-perturbed costs are signed;
2. an exact linear assignment to round the soft matrix to a permutation (shortest augmenting path,
   Jonker–Volgenant as described by Crouse 2016, vectorised over the batch with masks and a fixed
   number of steps, so on a GPU it never synchronises with the host);
3. steepest-ascent pair-swap local search on the exact QAP objective, started from the rounded
   softassign, from the vertex-only assignment and from a few random permutations (seeded, so the
   solver is a deterministic function of its input); the best local optimum is returned.

Quality (Gumbel-perturbed k-NN instances like training's, see tests/test_pretrain_solver.py):
the exhaustive optimum on 100 / 99.7 / 96.7 % of 4- / 5- / 6-node instances (300 each, worst miss
12 % of the objective); on 16-node instances 2.5 % below, on average, the best of 64 restarts
with slower annealing, and at least as good as the true matching on 97 % of them. The paper's
LPMP solver is a heuristic too; exact solvers are out of reach at n = 16 (16! permutations).

Nothing here downloads anything; pygmtools is not used (its pytorch Hungarian goes through scipy
on the CPU graph by graph). ``solve_qap_loop`` is the per-graph CPU baseline the benchmark compares
against: the same algorithm with scipy's assignment, one graph at a time.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import ConfigDict, Field, Strict
from scipy.optimize import linear_sum_assignment

from lvmbench.kit import Int, PosFloat, PosInt


@dataclass(frozen=True)
class SolverConfig:
    """The solver's settings (``-o solver_options='{...}'``); the annotations are types and bounds,
    checked by pydantic before a run starts (unknown keys refused)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    beta0: PosFloat = 1.0  # initial inverse temperature (on a per-graph standardised gradient)
    beta_max: PosFloat = 200.0  # annealing stops here; at 200 the softassign is practically discrete
    beta_rate: Annotated[float, Strict(), Field(gt=1, allow_inf_nan=False)] = 1.5  # at most 1 never ends
    inner: PosInt = 2  # softassign updates per temperature
    sinkhorn_iters: PosInt = 10
    swap_iters: Annotated[int, Strict(), Field(ge=0)] | None = None  # None: n (a permutation is n swaps away from any other)
    restarts: Annotated[int, Strict(), Field(ge=1, le=1024)] = 4  # random starts for the swap search (each costs one more batched search)
    seed: Int = 0

    def __post_init__(self) -> None:
        if self.beta0 > self.beta_max:
            raise ValueError(f"beta0 ({self.beta0}) must not exceed beta_max ({self.beta_max}): the annealing would not run")


def linear_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Exact minimum-cost assignment of every (n, n) matrix of a (B, n, n) batch.

    Returns ``perm`` (B, n) long with ``perm[b, i]`` the column of row i. Row ``cur`` is added by
    a Dijkstra search over reduced costs for the shortest augmenting path; at most ``cur + 1``
    columns are visited (only ``cur`` are taken), so the loops have fixed lengths and finished
    batch entries are masked rather than branched on. On the CPU the loops stop as soon as every
    entry is done (checking costs nothing there; on a GPU it would be a host synchronisation).
    """
    if cost.dim() != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"expected (B, n, n) costs, got {tuple(cost.shape)}")
    bsz, n, _ = cost.shape
    dev = cost.device
    on_cpu = dev.type == "cpu"
    # float64 on CPU keeps the dual updates exact enough to agree with brute force; on GPUs
    # float32 (fp64 is slow there) is ample for n = 16.
    c = cost.detach().to(torch.float64 if dev.type == "cpu" else torch.float32)
    c = c - c.min(dim=2, keepdim=True).values  # row shifts change no argmin, keep duals small
    inf = torch.tensor(float("inf"), dtype=c.dtype, device=dev)
    ar = torch.arange(bsz, device=dev)
    u = torch.zeros(bsz, n, dtype=c.dtype, device=dev)
    v = torch.zeros(bsz, n, dtype=c.dtype, device=dev)
    col4row = torch.full((bsz, n), -1, dtype=torch.long, device=dev)
    row4col = torch.full((bsz, n), -1, dtype=torch.long, device=dev)
    for cur in range(n):
        shortest = torch.full((bsz, n), float("inf"), dtype=c.dtype, device=dev)
        path = torch.full((bsz, n), -1, dtype=torch.long, device=dev)
        seen_r = torch.zeros(bsz, n, dtype=torch.bool, device=dev)
        seen_c = torch.zeros(bsz, n, dtype=torch.bool, device=dev)
        i = torch.full((bsz,), cur, dtype=torch.long, device=dev)
        min_val = torch.zeros(bsz, dtype=c.dtype, device=dev)
        sink = torch.zeros(bsz, dtype=torch.long, device=dev)
        active = torch.ones(bsz, dtype=torch.bool, device=dev)
        for _ in range(cur + 1):
            seen_r[ar, i] |= active
            red = min_val[:, None] + c[ar, i] - u[ar, i][:, None] - v
            better = active[:, None] & ~seen_c & (red < shortest)
            path = torch.where(better, i[:, None], path)
            shortest = torch.where(better, red, shortest)
            masked = torch.where(seen_c, inf, shortest)
            j = masked.argmin(dim=1)
            min_val = torch.where(active, masked[ar, j], min_val)
            seen_c[ar, j] |= active
            owner = row4col[ar, j]
            free = owner < 0
            sink = torch.where(active & free, j, sink)
            i = torch.where(active & ~free, owner, i)
            active = active & ~free
            if on_cpu and not bool(active.any()):  # free on the CPU; on a GPU it would synchronise
                break
        # Dual update (before augmenting: it reads the old row -> column assignment).
        others = seen_r.clone()
        others[:, cur] = False
        u = u + torch.where(others, min_val[:, None] - shortest.gather(1, col4row.clamp_min(0)), 0.0)
        u[:, cur] += min_val
        v = v - torch.where(seen_c, min_val[:, None] - shortest, 0.0)
        # Augment along the path back from the sink to row ``cur``.
        j = sink
        going = torch.ones(bsz, dtype=torch.bool, device=dev)
        for _ in range(cur + 1):
            i = path[ar, j]
            row4col[ar, j] = torch.where(going, i, row4col[ar, j])
            prev = col4row[ar, i]
            col4row[ar, i] = torch.where(going, j, prev)
            j = torch.where(going, prev, j)
            going = going & (i != cur)
            if on_cpu and not bool(going.any()):
                break
    return col4row


def perm_to_matrix(perm: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, n) column indices -> (B, n, n) 0/1 matrices with ``X[b, i, perm[b, i]] = 1``."""
    n = perm.shape[1]
    return torch.nn.functional.one_hot(perm, n).to(dtype)


def build_affinity(theta_v: torch.Tensor, theta_e: torch.Tensor | None) -> torch.Tensor:
    """Lawler matrix K (B, n², n²), row (i, a) = i·n + a: vertex scores on the diagonal, edge scores
    ``theta_e[b, i, a, j, c]`` (i→a together with j→c) off it, symmetrised (xᵀKx only sees the
    symmetric part, and the local search below relies on symmetry)."""
    bsz, n, _ = theta_v.shape
    if theta_e is None:
        return torch.diag_embed(theta_v.reshape(bsz, n * n))
    k = theta_e.reshape(bsz, n * n, n * n)
    k = 0.5 * (k + k.transpose(1, 2))
    k = k - torch.diag_embed(torch.diagonal(k, dim1=1, dim2=2))
    return k + torch.diag_embed(theta_v.reshape(bsz, n * n))


def _take(k: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """K[b, rows, cols] for index tensors shaped (B, ...) (broadcast together); a gather on the
    flattened K, several times faster on CPU than advanced indexing and never a copy of K."""
    rows, cols = torch.broadcast_tensors(rows, cols)
    lin = rows * k.shape[2] + cols
    shape = lin.shape
    return k.reshape(k.shape[0], -1).gather(1, lin.reshape(shape[0], -1)).view(shape)


def qap_objective(k: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """xᵀKx for permutations given as column indices, (B, n) or (B, S, n) (S starts per graph),
    by indexing K at the n² pairs of chosen rows (no n²×n² product, no copy of K per start)."""
    n = perm.shape[-1]
    idx = torch.arange(n, device=perm.device) * n + perm  # flat Lawler index of row i's assignment
    return _take(k, idx[..., :, None], idx[..., None, :]).sum(dim=(-2, -1))


def _sinkhorn_log(logits: torch.Tensor, iters: int) -> torch.Tensor:
    for _ in range(iters):
        logits = logits - torch.logsumexp(logits, dim=2, keepdim=True)
        logits = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return logits


def graduated_assignment(k: torch.Tensor, n: int, cfg: SolverConfig = SolverConfig()) -> torch.Tensor:
    """Softassign for ``max xᵀKx``: x ← Sinkhorn(exp(β·Kx)) with β annealed geometrically.

    The gradient Kx is standardised per graph before scaling by β so the schedule does not depend
    on how many edges a graph has or on the affinities' scale."""
    bsz = k.shape[0]
    x = torch.full((bsz, n * n, 1), 1.0 / n, dtype=k.dtype, device=k.device)
    beta = cfg.beta0
    while beta <= cfg.beta_max:
        for _ in range(cfg.inner):
            q = torch.bmm(k, x).view(bsz, n, n)
            q = (q - q.mean(dim=(1, 2), keepdim=True)) / q.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
            x = _sinkhorn_log(beta * q, cfg.sinkhorn_iters).exp().view(bsz, n * n, 1)
        beta *= cfg.beta_rate
    return x.view(bsz, n, n)


def assignment_rows(k: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """t[..., i, c] = Σ_k K[(i, c), r_k]: every candidate pair scored against the whole current
    assignment r_k = (k, p_k). O(n³) per start; ``swap_refine`` then keeps it up to date in O(n²)."""
    n = perm.shape[-1]
    x = torch.nn.functional.one_hot(perm, n).to(k.dtype).flatten(-2)  # (..., n²)
    if perm.dim() == 2:
        return torch.bmm(k, x[:, :, None]).view(-1, n, n)
    return torch.einsum("bpq,bsq->bsp", k, x).unflatten(-1, (n, n))  # one bmm, K not copied per start


def swap_gains(k: torch.Tensor, perm: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """Change of xᵀKx (symmetric K) when rows i and j exchange their columns, for all (i, j):
    perm (B, [S,] n) -> gains (B, [S,] n, n), O(n²) per start given ``t = assignment_rows``.
    Writing r_k = (k, p_k) for row k's current pair:

    Δ_ij = 2 Σ_{k∉{i,j}} (K[(i,p_j), r_k] + K[(j,p_i), r_k] − K[r_i, r_k] − K[r_j, r_k])
           + K[(i,p_j),(i,p_j)] + K[(j,p_i),(j,p_i)] + 2K[(i,p_j),(j,p_i)]
           − K[r_i,r_i] − K[r_j,r_j] − 2K[r_i,r_j]
    """
    n = perm.shape[-1]
    ar = torch.arange(n, device=perm.device)
    t = assignment_rows(k, perm) if t is None else t
    idx = ar * n + perm  # (..., n) flat r_k
    p_flat = ar[:, None] * n + perm[..., None, :]  # [i, j] -> (i, p_j)
    q_flat = p_flat.transpose(-1, -2)  # [i, j] -> (j, p_i)
    lead = perm.shape[:-1]
    t_new = t.gather(-1, perm[..., None, :].expand(*lead, n, n))  # t[i, p_j]
    # Σ_{k∉{i,j}} K[(i,p_j), r_k] = t[i, p_j] − K[(i,p_j), r_i] − K[(i,p_j), r_j]
    u1 = t_new - _take(k, p_flat, idx[..., :, None]) - _take(k, p_flat, idx[..., None, :])
    m = _take(k, idx[..., :, None], idx[..., None, :])  # m[i, k] = K[r_i, r_k]
    md = torch.diagonal(m, dim1=-2, dim2=-1)
    u3 = m.sum(dim=-1, keepdim=True) - md[..., :, None] - m  # Σ_{k∉{i,j}} K[r_i, r_k]
    old = md[..., :, None] + md[..., None, :] + 2 * m
    d1 = _take(k, p_flat, p_flat)  # K[(i,p_j),(i,p_j)]
    new = d1 + d1.transpose(-1, -2) + 2 * _take(k, p_flat, q_flat)
    return 2 * (u1 + u1.transpose(-1, -2) - u3 - u3.transpose(-1, -2)) + new - old


def swap_refine(k: torch.Tensor, perm: torch.Tensor, iters: int | None = None) -> torch.Tensor:
    """Steepest-ascent pair swaps for perm (B, [S,] n); a fixed number of rounds, starts already at
    a local optimum stay put. ``t`` is updated by the four columns of K a swap touches."""
    n = perm.shape[-1]
    lead = perm.shape[:-1]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=perm.device), diagonal=1)
    # Gains below this are float noise (they would let the search cycle between equal permutations).
    tol = (1e-5 * k.abs().amax(dim=(1, 2)).clamp_min(1e-12)).view(-1, *([1] * (len(lead) - 1)))
    rows = torch.arange(n * n, device=perm.device)[:, None]  # every Lawler row, against 2 columns
    t = assignment_rows(k, perm)
    for _ in range(n if iters is None else iters):
        g = swap_gains(k, perm, t).masked_fill(~upper, float("-inf")).flatten(-2)
        best, where = g.max(dim=-1)
        i, j = (where // n)[..., None], (where % n)[..., None]
        take = best > tol
        pi, pj = perm.gather(-1, i), perm.gather(-1, j)
        old_cols = torch.cat([i * n + pi, j * n + pj], dim=-1)  # (..., 2) pairs leaving
        new_cols = torch.cat([i * n + pj, j * n + pi], dim=-1)  # (..., 2) pairs arriving
        delta = (_take(k, rows, new_cols[..., None, :]) - _take(k, rows, old_cols[..., None, :])).sum(dim=-1).unflatten(-1, (n, n))
        t = t + torch.where(take[..., None, None], delta, 0.0)
        tk = take[..., None]
        perm = perm.scatter(-1, i, torch.where(tk, pj, pi)).scatter(-1, j, torch.where(tk, pi, pj))
    return perm


def _random_starts(bsz: int, n: int, cfg: SolverConfig, device: torch.device) -> torch.Tensor:
    """(B, restarts, n) random permutations from a fixed seed (the MAP oracle must be a function:
    IMLE's two solves and the per-graph baseline see the same starts)."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    return torch.rand(bsz, cfg.restarts, n, generator=gen, device=device).argsort(dim=2)


def _best_of(k: torch.Tensor, starts: torch.Tensor, cfg: SolverConfig) -> torch.Tensor:
    """Swap-refine (B, S, n) starts together and keep each graph's best (ties: the first start)."""
    refined = swap_refine(k, starts, cfg.swap_iters)
    pick = qap_objective(k, refined).argmax(dim=1)
    return refined[torch.arange(k.shape[0], device=k.device), pick]


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A region where autocast is off on ``device`` (a no-op where it has no autocast)."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def _float32_outside_autocast(fn):
    """Run the solver with autocast off on its device. ``.float()`` on the inputs is not enough:
    under a bf16 autocast region (the trainer's forward, or a backward called inside one) the
    softassign's ``bmm`` and the swap search's ``einsum`` would be recast to bf16 and return other
    matchings (8 of 64 16-node graphs differed in a measurement), and IMLE's backward solve, which
    runs wherever ``loss.backward()`` is called, would differ from its forward solve."""

    @functools.wraps(fn)
    def wrapper(theta_v, *args, **kwargs):
        with no_autocast(theta_v.device):
            return fn(theta_v, *args, **kwargs)

    return wrapper


def _one_thread_on_cpu(fn):
    """Run on one CPU thread: the solver's tensors are tiny (≤ B·n⁴ elements) and its ops many,
    so intra-op threads cost more in synchronisation than they save (5–30× slower measured with
    2 threads on a loaded 2-core machine). No effect on GPU tensors."""

    @functools.wraps(fn)
    def wrapper(theta_v, *args, **kwargs):
        if theta_v.device.type != "cpu" or torch.get_num_threads() == 1:
            return fn(theta_v, *args, **kwargs)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(theta_v, *args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


@_float32_outside_autocast
@_one_thread_on_cpu
def solve_qap(theta_v: torch.Tensor, theta_e: torch.Tensor | None = None, cfg: SolverConfig = SolverConfig()) -> torch.Tensor:
    """Best permutation matrix (B, n, n) for vertex scores (B, n, n) and optional edge scores
    (B, n, n, n, n); maximises Σ θ_v·x + Σ θ_e·x⊗x. Without edges this is an exact assignment."""
    theta_v = theta_v.detach().float()
    bsz, n, _ = theta_v.shape
    if theta_e is None:
        return perm_to_matrix(linear_assignment(-theta_v), theta_v.dtype)
    k = build_affinity(theta_v, theta_e.detach().float())
    soft = graduated_assignment(k, n, cfg)
    starts = torch.cat([
        torch.stack([linear_assignment(-soft), linear_assignment(-theta_v)], dim=1),
        _random_starts(bsz, n, cfg, k.device),
    ], dim=1)
    return perm_to_matrix(_best_of(k, starts, cfg), theta_v.dtype)


def _scipy_assignment(cost: torch.Tensor) -> torch.Tensor:
    rows = [torch.as_tensor(linear_sum_assignment(c.numpy())[1]) for c in cost.double()]
    return torch.stack(rows).long()


@_float32_outside_autocast
@_one_thread_on_cpu
def solve_qap_loop(theta_v: torch.Tensor, theta_e: torch.Tensor | None = None, cfg: SolverConfig = SolverConfig()) -> torch.Tensor:
    """Baseline: the same solver graph by graph on the CPU with scipy's assignment (the way a
    CPU library such as LPMP is called). Returns the result on the input's device."""
    dev = theta_v.device
    bsz, n, _ = theta_v.shape
    rand = _random_starts(bsz, n, cfg, torch.device("cpu"))
    out = []
    for b in range(bsz):
        tv = theta_v[b : b + 1].detach().float().cpu()
        if theta_e is None:
            out.append(perm_to_matrix(_scipy_assignment(-tv)))
            continue
        k = build_affinity(tv, theta_e[b : b + 1].detach().float().cpu())
        soft = graduated_assignment(k, n, cfg)
        starts = torch.cat([torch.stack([_scipy_assignment(-soft), _scipy_assignment(-tv)], dim=1), rand[b : b + 1]], dim=1)
        out.append(perm_to_matrix(_best_of(k, starts, cfg)))
    return torch.cat(out).to(dev)
