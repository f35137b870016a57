"""Normalised surface Dice (NSD, Nikolov et al. 2021) at a tolerance, spacing-aware, 2D and 3D.

    NSD = (|S_G within tol of S_P| + |S_P within tol of S_G|) / (|S_G| + |S_P|)

where |.| is surface area (3D) or contour length (2D). The surface is DeepMind's
``surface-distance`` definition, the one MSD, MedSAM and FLARE evaluate with: surfels sit on the grid
of voxel *corners*, one per 2x2(x2) cell that the marching-squares/cubes iso-surface crosses, each
weighted by its length/area (``lvmbench.metrics.surfel_table``); a surfel's distance to the other
surface is the Euclidean distance (in spacing units) from its cell to the nearest cell holding a
surfel of the other mask. Values equal ``surface_distance.compute_surface_dice_at_tolerance`` to
1e-12 and MONAI's ``compute_surface_dice(..., use_subvoxels=True)`` (float32 inside) to 1e-6
(tests/test_surface_dice.py).

MONAI's default (``use_subvoxels=False``) is a different quantity: its surface is the set of mask
voxels with a background neighbour (voxel centres, not corners), each counted once whatever its
area. The two agree for identical masks and at tolerances beyond (or below) every distance, and
differ in between: by 0.05-0.2 on the random shapes of the tests (two pixels two apart at a
tolerance of one: 0.5 here, 0 there), so numbers from the two are not comparable.

Masks outside the image count as background (an object touching the border has a closed surface),
as in ``surface-distance``. Both masks empty: 0/0, returned as NaN here; what a case with an empty
ground truth scores is the caller's ``empty_policy`` (``lvmbench.metrics.empty_masks``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lvmbench.metrics.empty_masks import apply_empty_policy
from lvmbench.metrics.surfel_table import surfel_measures


@dataclass(frozen=True)
class SurfaceDistances:
    """Every surfel of each mask: its length/area and its distance to the other mask's surface
    (inf when the other mask is empty)."""

    gt_to_pred: np.ndarray
    gt_areas: np.ndarray
    pred_to_gt: np.ndarray
    pred_areas: np.ndarray


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """(n0, n1[, n2]) bool mask -> uint8 code of every cell of the corner grid, (n0+1, n1+1[, n2+1]).

    Corner j lies between voxels j-1 and j on each axis; the mask is padded with background so the
    cells on the image border see outside voxels as empty."""
    nd = mask.ndim
    padded = np.pad(mask.astype(np.uint8), 1)
    codes = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.uint8)
    for offset in itertools.product((0, 1), repeat=nd):
        bit = sum(o << (nd - 1 - i) for i, o in enumerate(offset))  # 2a+b or 4a+2b+c
        window = tuple(slice(o, o + n + 1) for o, n in zip(offset, mask.shape))
        codes |= padded[window] << np.uint8(bit)
    return codes


def _crop(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Both masks cut to the bounding box of their union (None when both are empty): distances
    between surfels do not depend on how much background surrounds them."""
    union = pred | gt
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return pred[tuple(box)], gt[tuple(box)]


def _check(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, ...]:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if pred.ndim not in (2, 3):
        raise ValueError(f"surface Dice needs 2D or 3D masks, got {pred.ndim} dimensions")
    sp = tuple(1.0 for _ in range(pred.ndim)) if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != pred.ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing {spacing} must be {pred.ndim} positive numbers (one per mask axis)")
    return sp


def _exact(src_at: tuple[np.ndarray, ...], nearest: Sequence[np.ndarray], sp: tuple[float, ...]) -> np.ndarray:
    """Distances from surfel cells ``src_at`` (index arrays) to their nearest cells ``nearest``,
    with the arithmetic of scipy's ``distance_transform_edt`` (index differences times the spacing,
    squared, summed in axis order, square root): the same floats as its full map. Which of several
    equally near cells is taken matters at a tolerance equal to that distance (3 x 0.7 mm is not
    1 x 2.1 mm in floating point), so the nearest cell comes from scipy's feature transform, as in
    ``surface-distance``, not from a search of our own."""
    total = np.zeros(len(src_at[0]))
    for axis, step in enumerate(sp):
        d = (np.asarray(nearest[axis]) - src_at[axis]).astype(np.float64) * step
        total = total + d * d
    return np.sqrt(total)


def _distances_edt(src: np.ndarray, dst: np.ndarray, sp: tuple[float, ...]) -> np.ndarray:
    """Every surfel of ``src`` to the nearest of ``dst``: scipy's feature transform over the cropped
    grid, distances computed at the ``src`` cells only (half the time of the full distance map)."""
    nearest = ndimage.distance_transform_edt(~dst, sampling=sp, return_distances=False, return_indices=True)
    at = np.nonzero(src)
    return _exact(at, [nearest[a][at] for a in range(src.ndim)], sp)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Surfels of both masks with their distances to the other surface (spacing None = 1 per axis)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    sp = _check(pred, gt, spacing)
    cropped = _crop(pred, gt)
    if cropped is None:
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty, empty, empty)
    measure = surfel_measures(sp)
    full = (1 << (1 << pred.ndim)) - 1
    borders, areas = [], []
    for m in cropped:
        codes = neighbour_codes(m)
        border = (codes != 0) & (codes != full)
        borders.append(border)
        areas.append(measure[codes[border]])

    def distances(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        n = int(src.sum())
        if n == 0 or not dst.any():  # no surface to measure to: an all-background prediction costs nothing
            return np.full(n, np.inf)
        return _distances_edt(src, dst, sp)

    (b_pred, b_gt), (a_pred, a_gt) = borders, areas
    return SurfaceDistances(gt_to_pred=distances(b_gt, b_pred), gt_areas=a_gt, pred_to_gt=distances(b_pred, b_gt), pred_areas=a_pred)


def surface_dice_at(d: SurfaceDistances, tolerance: float) -> float:
    """NSD from precomputed surface distances; NaN when neither mask has a surface."""
    total = float(d.gt_areas.sum() + d.pred_areas.sum())
    if total == 0.0:
        return float("nan")
    near = float(d.gt_areas[d.gt_to_pred <= tolerance].sum() + d.pred_areas[d.pred_to_gt <= tolerance].sum())
    return near / total


def normalized_surface_dice(pred: np.ndarray, gt: np.ndarray, tolerance: float, spacing: Sequence[float] | None = None) -> float:
    """NSD of two binary masks (2D or 3D) at ``tolerance`` in spacing units (mm with a physical
    spacing, pixels without): 1 = every surfel within tolerance, 0 = none; NaN when both are empty,
    0 when exactly one is."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance {tolerance} must be >= 0")
    return surface_dice_at(surface_distances(pred, gt, spacing), tolerance)


def nsd_per_class(pred: np.ndarray, target: np.ndarray, classes: Sequence[int], tolerance: float, spacing: Sequence[float] | None = None, empty_policy: str = "one") -> np.ndarray:
    """NSD of each class of two label maps, classes absent from ``target`` scored by ``empty_policy``."""
    p, t = np.asarray(pred), np.asarray(target)
    out = np.full(len(classes), np.nan)
    gt_empty, pred_empty = np.zeros(len(classes), bool), np.zeros(len(classes), bool)
    for i, c in enumerate(classes):
        pc, tc = p == c, t == c
        gt_empty[i], pred_empty[i] = not tc.any(), not pc.any()
        if not gt_empty[i]:
            out[i] = normalized_surface_dice(pc, tc, tolerance, spacing)
    return apply_empty_policy(out, gt_empty, pred_empty, empty_policy)
