"""Box prompts from ground-truth masks (LVM-Med's ``get_bbox_from_mask``, reference §1.4).

Coordinates: a box is ``[x_min, y_min, x_max, y_max]`` in pixels of the mask grid (M x M, M = P/4
for a P-pixel image: 256 at SAM's 1024), the extremes being the first and last foreground pixel
index, as the paper's code. ``to_image`` scales it to the image the encoder sees (x P/M = x4),
which is what SAM's prompt encoder reads.

- Training: each side moves outward by ``randint(0, jitter)`` pixels (numpy's exclusive upper end,
  0..19 for the paper's 20), clipped to [0, M], drawn afresh every time the image is used.
- Test and validation: no jitter; the box is a function of the mask alone (recorded per case).
- Empty ground truth: there is no object to point at. The clean rule is to give no prompt and
  leave the image out of training and scoring (its count is recorded). ``paper_random_box`` is the
  paper's behaviour: a point drawn from N(0, 4M) per axis (``np.random.normal(0, 1024, 2)`` at
  M = 256), each side moved outward like a training box, then ``max(0, .)`` / ``min(4M, .)`` as
  its code does: about half of these boxes lie off the image or are inverted, as the paper's were.
"""

from __future__ import annotations

import numpy as np
import torch


def box_from_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """Tight box of the nonzero pixels of an (H, W) mask, or None when the mask is empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return None
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()


def boxes_from_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) masks -> (N, 4) boxes and an (N,) bool 'has foreground' (empty rows are zeros)."""
    masks = masks.bool()
    n, h, w = masks.shape
    fg = masks.flatten(1).any(1)
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    big = torch.iinfo(torch.long).max
    y0 = torch.where(rows, ar_h, big).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values
    x0 = torch.where(cols, ar_w, big).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    boxes[~fg] = 0.0
    return boxes, fg


def jitter(boxes: torch.Tensor, max_px: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Move each side of (N, 4) boxes outward by an integer in [0, max_px), clip to [0, size]."""
    if max_px <= 0:
        return boxes.clone()
    d = torch.randint(0, max_px, boxes.shape, generator=gen).float()
    out = boxes + d * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    return out.clamp(0, size)


def paper_random_box(size: int, max_px: int, rng: np.random.Generator) -> torch.Tensor:
    """The paper's box for an empty mask: a random point (N(0, 4 * size) per axis), jittered
    outward and clipped to [0, 4 * size] (the paper's 1024 at a 256 grid)."""
    y, x = rng.normal(0, 4 * size, 2)
    j = rng.integers(0, max(1, max_px), 4)
    return torch.tensor([max(0.0, x - j[0]), max(0.0, y - j[1]), min(4.0 * size, x + j[2]), min(4.0 * size, y + j[3])], dtype=torch.float32)


def to_image(boxes: torch.Tensor, mask_size: int, image_size: int) -> torch.Tensor:
    """Mask-grid boxes -> image pixels (the paper's x 1024/256)."""
    return boxes * (image_size / mask_size)
