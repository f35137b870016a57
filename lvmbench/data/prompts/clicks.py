"""Point prompts and correction clicks.

A point is ``(x, y)`` in pixels of the grid it was drawn on, with SAM's labels: 1 = object,
0 = background, -1 = "no point" (SAM's padding token: a correction round with nothing to correct
adds one, so every image of a batch has the same number of points).

Initial points (``PromptRule.point_rule``), drawn on the object mask at the rule's resolution:

- ``uniform``: k distinct object pixels, uniformly (``RandomState.choice`` over the object pixels in
  row-major order, with replacement only when the object has fewer than k pixels), label 1; on an
  empty mask (``empty: random_box``) k background pixels, label 0.
- ``sam-med2d``: SAM-Med2D's ``init_point_sampling``: k = 1: one object pixel (``randint`` over
  them), or a background pixel labelled 0 when there is none; k > 1: k // 2 object and k - k // 2
  background pixels (``choice`` with replacement each), then shuffled (``permutation``).

Correction clicks (``PromptRule.click``), on the prediction and the object at the mask grid after
each round:

- ``interior`` (default; the click simulation of interactive segmentation benchmarks, RITM-style):
  the error pixels split into missed object (ground truth but not predicted) and extra (predicted,
  not ground truth), each into 8-connected components; the largest component wins (missed before
  extra on equal size, then the first in row-major order); the click is its deepest pixel, the
  one farthest from the component's border (Euclidean distance transform, the image edge counting
  as border; first in row-major order on ties): a positive click for a missed component, a
  negative one for an extra component. Deterministic: no random numbers.
- ``error-uniform``: SAM-Med2D's ``select_random_points`` with one point: an error pixel drawn
  uniformly (``choice`` over the error pixels in row-major order), positive when the object was
  missed there, negative when it was predicted in excess.

micro-sam's ``IterativePromptGenerator`` (one positive and one negative click per round) is not
offered: one click per round keeps the curve comparable with SAM-Med2D's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lvmbench.data.prompts.boxes import EIGHT


def initial_points(mask: np.ndarray, k: int, rule: str, rs: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """(k, 2) float (x, y) points and (k,) int labels drawn on an (R, R) object mask."""
    m = np.asarray(mask) > 0
    if k == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    fg = np.argwhere(m)[:, ::-1]  # (x, y), row-major
    bg = np.argwhere(~m)[:, ::-1]
    if rule == "uniform":
        pool, label = (fg, 1) if len(fg) else (bg, 0)
        idx = rs.choice(len(pool), k, replace=k > len(pool))
        return pool[idx].astype(np.float64), np.full(k, label, dtype=np.int64)
    if rule == "sam-med2d":
        if k == 1:
            if len(fg):
                return fg[[rs.randint(len(fg))]].astype(np.float64), np.ones(1, dtype=np.int64)
            return bg[[rs.randint(len(bg))]].astype(np.float64), np.zeros(1, dtype=np.int64)
        n_fg = k // 2 if len(fg) else 0
        n_bg = k - n_fg
        pts = np.concatenate([fg[rs.choice(len(fg), n_fg, replace=True)] if n_fg else np.zeros((0, 2), dtype=np.int64), bg[rs.choice(len(bg), n_bg, replace=True)]])
        labels = np.concatenate([np.ones(n_fg, dtype=np.int64), np.zeros(n_bg, dtype=np.int64)])
        order = rs.permutation(k)
        return pts[order].astype(np.float64), labels[order]
    raise ValueError(f"unknown point rule '{rule}'")


def _largest_component(region: np.ndarray) -> tuple[int, np.ndarray | None]:
    lab, n = ndimage.label(region, structure=EIGHT)
    if n == 0:
        return 0, None
    sizes = np.bincount(lab.ravel())[1:]
    best = int(np.argmax(sizes))  # the first of equal sizes: components are numbered in row-major order
    return int(sizes[best]), lab == best + 1


def deepest_pixel(component: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel farthest from the component's border (the image edge is border too)."""
    dist = ndimage.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def correction_click(pred: np.ndarray, target: np.ndarray, rule: str, rs: np.random.RandomState | None = None) -> tuple[float, float, int]:
    """The next click ``(x, y, label)`` on an (M, M) prediction against its object; ``(0, 0, -1)``
    (no point) when the prediction has no error."""
    p, t = np.asarray(pred) > 0, np.asarray(target) > 0
    missed, extra = t & ~p, p & ~t
    if not (missed.any() or extra.any()):
        return 0.0, 0.0, -1
    if rule == "interior":
        n_miss, c_miss = _largest_component(missed)
        n_extra, c_extra = _largest_component(extra)
        comp, label = (c_miss, 1) if n_miss >= n_extra else (c_extra, 0)
        x, y = deepest_pixel(comp)
        return float(x), float(y), label
    if rule == "error-uniform":
        if rs is None:
            raise ValueError("the error-uniform click needs a random generator")
        err = np.argwhere(p != t)  # (y, x), row-major
        y, x = err[rs.choice(len(err), 1, replace=True)[0]]
        return float(x), float(y), 1 if t[y, x] else 0
    raise ValueError(f"unknown click rule '{rule}'")
