"""Box geometry on a ground-truth mask at the rule's resolution R (an R x R grid).

A box is ``[x_min, y_min, x_max, y_max]`` in pixels of that grid (floats; integers for boxes from
masks). Random numbers come from a numpy ``RandomState`` (the legacy Mersenne-Twister generator
that ``np.random.randint`` / ``np.random.normal`` use), in the order the transcribed code draws
them, so a test can run the published rule on the same generator and get the same boxes.

Jitter kinds (``PromptRule.jitter``):

- ``outward``: each side moves outward by an integer uniform in [0, px], drawn in the order
  x_min, x_max, y_min, y_max; then ``max(0, .)`` for the minima and ``min(R, .)`` for the maxima
  (LVM-Med's ``randint(0, 20)`` is px = 19; MedSAM's ``random.randint(0, 20)`` is px = 20).
- ``fixed``: each side moves outward by exactly px, clipped the same way (MedSAM's comparison).
- ``shift``: the whole box moves by (dx, dy), each an integer uniform in [-m, m) with
  ``m = min(px, min(w, h) // 2)`` (w, h of the box); x is drawn before y and no draw is made when
  m = 0; no clipping (SAM-Med2D's ``get_boxes_from_mask``: ``int(0.1 * min(w, h) * 5)`` equals
  ``min(w, h) // 2`` for every integer size, checked in the tests).
- ``none``: the box as computed.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity (skimage.measure.label's default in 2D)


def tight_box(mask: np.ndarray, source: str = "union", end: str = "last") -> np.ndarray | None:
    """The box of the object pixels (``union``) or of its largest 8-connected component
    (``largest_component``; ties: the component met first in row-major order), or None when empty.
    ``end='past_last'`` gives x_max/y_max one past the last pixel (skimage regionprops)."""
    m = np.asarray(mask) > 0
    if not m.any():
        return None
    if source == "largest_component":
        lab, n = ndimage.label(m, structure=EIGHT)
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            m = lab == (int(np.argmax(sizes)) + 1)  # argmax: the first of equal sizes
    ys, xs = np.nonzero(m)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
    if end == "past_last":
        box[2:] += 1
    return box


def jitter_box(box: np.ndarray, kind: str, px: int, size: int, rs: np.random.RandomState) -> np.ndarray:
    """One box moved by the rule (see the module doc), with draws from ``rs``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if kind == "none" or (px == 0 and kind != "shift"):
        return np.array([x0, y0, x1, y1])
    if kind == "outward":
        d = [rs.randint(0, px + 1) for _ in range(4)]  # x_min, x_max, y_min, y_max
        return np.array([max(0.0, x0 - d[0]), max(0.0, y0 - d[2]), min(float(size), x1 + d[1]), min(float(size), y1 + d[3])])
    if kind == "fixed":
        return np.array([max(0.0, x0 - px), max(0.0, y0 - px), min(float(size), x1 + px), min(float(size), y1 + px)])
    if kind == "shift":
        m = min(px, int(min(abs(x1 - x0), abs(y1 - y0))) // 2)
        dx = rs.randint(-m, m) if m > 0 else 0
        dy = rs.randint(-m, m) if m > 0 else 0
        return np.array([x0 + dx, y0 + dy, x1 + dx, y1 + dy])
    raise ValueError(f"unknown jitter kind '{kind}'")


def random_box(size: int, kind: str, px: int, rs: np.random.RandomState) -> np.ndarray:
    """LVM-Med's box for an empty mask: a point from N(0, 4R) per axis (y drawn first, as the
    source unpacks it), each side moved outward like an ``outward`` box when the split's jitter is
    outward, then clipped to [0, 4R] (its 1024 at R = 256). About half of these boxes lie off the
    image or are inverted, as the paper's were."""
    y, x = rs.normal(0, 4 * size, 2)
    d = [rs.randint(0, px + 1) for _ in range(4)] if kind == "outward" else [0, 0, 0, 0]
    big = 4.0 * size
    return np.array([max(0.0, x - d[0]), max(0.0, y - d[2]), min(big, x + d[1]), min(big, y + d[3])])


def redraw_boxes(base: torch.Tensor, kind: str, px: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Training boxes redrawn at every use (``redraw: true``): the same rules as ``jitter_box``,
    vectorised over (N, 4) base boxes with a torch generator (the unit's, so every encoder trained
    on one task and seed sees the same boxes)."""
    if kind == "none" or len(base) == 0:
        return base.clone()
    if kind == "outward":
        d = torch.randint(0, px + 1, base.shape, generator=gen).float()
        out = base + d * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        return torch.cat([out[:, :2].clamp(min=0), out[:, 2:].clamp(max=float(size))], 1)
    if kind == "fixed":
        out = base + px * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        return torch.cat([out[:, :2].clamp(min=0), out[:, 2:].clamp(max=float(size))], 1)
    if kind == "shift":
        wh = (base[:, 2:] - base[:, :2]).abs().min(1).values.floor()
        m = torch.minimum(torch.full_like(wh, float(px)), torch.div(wh, 2, rounding_mode="floor"))
        u = torch.rand(len(base), 2, generator=gen)
        d = torch.floor(u * (2 * m[:, None])) - m[:, None]  # uniform integers in [-m, m); 0 when m = 0
        return base + torch.cat([d, d], 1)
    raise ValueError(f"unknown jitter kind '{kind}'")


def fill_boxes(boxes: torch.Tensor, grid: int, scale: float) -> torch.Tensor:
    """Logits (N, grid, grid) of the predictor that fills each box (given at a grid ``grid /
    scale`` times coarser, i.e. box * scale is in grid pixels): +1 inside (pixel indices between
    the scaled corners, inclusive), -1 outside. What the box alone is worth."""
    ar = torch.arange(grid).float()
    b = boxes * scale
    inside_x = (ar[None] >= b[:, 0:1]) & (ar[None] <= b[:, 2:3])
    inside_y = (ar[None] >= b[:, 1:2]) & (ar[None] <= b[:, 3:4])
    return torch.where(inside_y[:, :, None] & inside_x[:, None, :], 1.0, -1.0)
