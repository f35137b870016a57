"""Vertex (first-order) and edge (second-order) affinities between a graph of s-views and a graph
of t-views (LVM-Med Eq. 2–3 and §3.2). Everything is batched over graphs: (G, n, ...) tensors.

Vertex:  c^v_ia = α·cos(ẑ_i^s, ẑ_a^t) + (1 − α)·(c^lo_ia(s→t) + c^lo_ia(t→s)),  α = 0.8.
Local:   c^lo(s→t) = ½(location term + feature term), from the last feature maps y and the crop
         boxes. For every cell of y_i^s take its nearest cell of y_a^t — by position in the source
         image (location term) or by L2 distance between feature vectors (feature term) — keep the
         γ best-matched cells (smallest distance) and average their cosine similarities.
Edge:    c^e_{ia,jb} = cos(ẑ_i^s − ẑ_j^s, ẑ_a^t − ẑ_b^t) for edges (i, j) of G^s and (a, b) of G^t.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def cell_positions(boxes: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Centres of a rows×cols feature grid in the source image's normalised coordinates.

    ``boxes`` (..., 4) are (x1, y1, x2, y2) of each view's crop, x1 > x2 for a flipped view, so the
    same formula maps column c to the right place whether or not the view was flipped.
    Returns (..., rows·cols, 2) as (x, y), row-major like ``flatten(2)`` of a (D, R, S) map.
    """
    fy = (torch.arange(rows, device=boxes.device, dtype=boxes.dtype) + 0.5) / rows
    fx = (torch.arange(cols, device=boxes.device, dtype=boxes.dtype) + 0.5) / cols
    x1, y1, x2, y2 = boxes.unbind(-1)
    xs = x1[..., None] + fx * (x2 - x1)[..., None]  # (..., cols)
    ys = y1[..., None] + fy * (y2 - y1)[..., None]  # (..., rows)
    grid_y = ys[..., :, None].expand(*ys.shape, cols)
    grid_x = xs[..., None, :].expand(*xs.shape[:-1], rows, cols)
    return torch.stack([grid_x, grid_y], dim=-1).flatten(-3, -2)


def _top_mean(dist: torch.Tensor, cos: torch.Tensor, gamma: int) -> torch.Tensor:
    """Nearest partner along the last axis, then the mean cosine of the γ closest pairs."""
    d, idx = dist.min(dim=-1)
    c = cos.gather(-1, idx[..., None]).squeeze(-1)
    keep = d.topk(min(gamma, d.shape[-1]), dim=-1, largest=False).indices
    return c.gather(-1, keep).mean(dim=-1)


def local_affinity(ys: torch.Tensor, yt: torch.Tensor, boxes_s: torch.Tensor, boxes_t: torch.Tensor, gamma: int = 20) -> torch.Tensor:
    """c^lo(s→t) + c^lo(t→s) for all node pairs: ys, yt (G, n, D, R, S), boxes (G, n, 4) -> (G, n, n).

    γ is not given in the paper; the default 20 is VICRegL's number of kept matches on 7×7 maps
    (the local cost is borrowed from VICRegL), capped at the number of cells.
    """
    rows, cols = ys.shape[-2:]
    fs = ys.flatten(-2).transpose(-1, -2).float()  # (G, n, P, D)
    ft = yt.flatten(-2).transpose(-1, -2).float()
    dot = torch.einsum("gipd,gaqd->giapq", fs, ft)  # (G, n, n, P, Q)
    ns, nt = fs.norm(dim=-1), ft.norm(dim=-1)  # (G, n, P)
    outer = ns[:, :, None, :, None] * nt[:, None, :, None, :]
    cos = dot / outer.clamp_min(1e-8)
    feat_d = (ns[:, :, None, :, None] ** 2 + nt[:, None, :, None, :] ** 2 - 2 * dot).clamp_min(0)
    ps = cell_positions(boxes_s.float(), rows, cols)  # (G, n, P, 2)
    pt = cell_positions(boxes_t.float(), rows, cols)
    loc_d = (ps[:, :, None, :, None, :] - pt[:, None, :, None, :, :]).pow(2).sum(-1)
    # Selections (nearest cell, top-γ) are discrete; gradients flow through the cosines kept.
    s2t = 0.5 * (_top_mean(loc_d.detach(), cos, gamma) + _top_mean(feat_d.detach(), cos, gamma))
    cos_t, loc_t, feat_t = (x.transpose(-1, -2) for x in (cos, loc_d, feat_d))
    t2s = 0.5 * (_top_mean(loc_t.detach(), cos_t, gamma) + _top_mean(feat_t.detach(), cos_t, gamma))
    return s2t + t2s


def global_affinity(zs: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
    """cos(ẑ_i^s, ẑ_a^t): (G, n, F) × (G, n, F) -> (G, n, n)."""
    return F.normalize(zs, dim=-1) @ F.normalize(zt, dim=-1).transpose(1, 2)


def vertex_affinity(zs: torch.Tensor, zt: torch.Tensor, local: torch.Tensor | None, alpha: float = 0.8) -> torch.Tensor:
    """Eq. 3. Without a local term (the paper's "w/o local similarity" ablation) it is the cosine alone."""
    glob = global_affinity(zs, zt)
    if local is None:
        return glob
    return alpha * glob + (1 - alpha) * local


def edge_affinity(zs: torch.Tensor, zt: torch.Tensor, adj_s: torch.Tensor, adj_t: torch.Tensor) -> torch.Tensor:
    """(G, n, n, n, n) scores indexed [g, i, a, j, b]: pairing i→a together with j→b, non-zero only
    where (i, j) is an edge of G^s and (a, b) an edge of G^t (the Lawler layout of ``solver``)."""
    ds = F.normalize(zs[:, :, None] - zs[:, None, :], dim=-1)  # (G, n, n, F), d_ij = ẑ_i − ẑ_j
    dt = F.normalize(zt[:, :, None] - zt[:, None, :], dim=-1)
    cos = torch.einsum("gijf,gabf->giajb", ds, dt)
    mask = adj_s[:, :, None, :, None] * adj_t[:, None, :, None, :]
    return cos * mask
