"""Segmentation metrics: Dice, IoU (per image or per volume) and the 95th-percentile Hausdorff distance.

Two families, both recorded in every segmentation result (reference §1.4):

- ``paper``: LVM-Med's own numbers. Per-image (or per-slice) Dice/IoU of the foreground classes at the
  *resized* resolution, ``(2|P∩G| + eps) / (|P| + |G| + eps)`` with eps = 1e-6, so an image whose
  ground truth and prediction are both empty scores 1; volumetric IoU of one scored class for the
  3D tasks (MMWHS: the left atrium, class 2).
- ``clean``: the same overlap scores at the case's *native* resolution (predictions are upsampled
  back), per class and averaged over the foreground classes, without eps: a class absent from the
  ground truth scores what the ``empty_policy`` says (``lvmbench.metrics.empty_masks``); plus HD95
  from MONAI and normalised surface Dice (``lvmbench.metrics.surface``) in physical units (pixel or
  voxel spacing), under the same policy.

Everything works on integer label maps; counts come from one ``bincount`` of ``target * C + pred``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from lvmbench.metrics.empty_masks import apply_empty_policy

EPS = 1e-6


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample confusion matrices: (N, ...) label maps -> (N, C, C) counts, rows = truth.

    Labels outside ``[0, num_classes)`` are a bug upstream (readers check ranges), so they raise.
    """
    n = pred.shape[0]
    p = pred.reshape(n, -1).long()
    t = target.reshape(n, -1).long()
    if p.numel() and (int(p.min()) < 0 or int(t.min()) < 0 or int(p.max()) >= num_classes or int(t.max()) >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes})")
    offset = torch.arange(n, device=p.device).view(n, 1) * num_classes * num_classes
    flat = (offset + t * num_classes + p).reshape(-1)
    counts = torch.bincount(flat, minlength=n * num_classes * num_classes)
    return counts.view(n, num_classes, num_classes)


def overlap_from_confusion(cm: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, C) confusion -> per-sample, per-class Dice and IoU, each (N, C), float64.

    With eps in numerator and denominator, empty truth + empty prediction gives exactly 1.
    """
    cm = cm.double()
    inter = torch.diagonal(cm, dim1=1, dim2=2)
    psum = cm.sum(dim=1)  # column sums: predicted pixels per class
    tsum = cm.sum(dim=2)  # row sums: true pixels per class
    dice = (2 * inter + eps) / (psum + tsum + eps)
    iou = (inter + eps) / (psum + tsum - inter + eps)
    return dice, iou


def per_sample_overlap(pred: torch.Tensor, target: torch.Tensor, num_classes: int, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of every sample (image or slice) and class: two (N, C) arrays."""
    dice, iou = overlap_from_confusion(confusion(pred, target, num_classes), eps)
    return dice.cpu().numpy(), iou.cpu().numpy()


def volume_overlap(pred: torch.Tensor, target: torch.Tensor, num_classes: int, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of one whole volume (all voxels pooled), per class: two (C,) arrays."""
    dice, iou = overlap_from_confusion(confusion(pred.reshape(1, -1), target.reshape(1, -1), num_classes), eps)
    return dice[0].cpu().numpy(), iou[0].cpu().numpy()


def clean_overlap(pred: torch.Tensor, target: torch.Tensor, num_classes: int, empty_policy: str = "one") -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of one case (all pixels/voxels pooled), per class, without eps: 2|P∩G|/(|P|+|G|)
    and |P∩G|/|P∪G| where the class is in the ground truth, the ``empty_policy``'s score where not."""
    cm = confusion(pred.reshape(1, -1), target.reshape(1, -1), num_classes)[0].double()
    inter = torch.diagonal(cm)
    psum, tsum = cm.sum(dim=0), cm.sum(dim=1)
    gt_empty, pred_empty = (tsum == 0).cpu().numpy(), (psum == 0).cpu().numpy()
    safe = lambda d: torch.where(d > 0, d, torch.ones_like(d))  # noqa: E731 - empty ground truth is replaced below
    dice = (2 * inter / safe(psum + tsum)).cpu().numpy()
    iou = (inter / safe(psum + tsum - inter)).cpu().numpy()
    return apply_empty_policy(dice, gt_empty, pred_empty, empty_policy), apply_empty_policy(iou, gt_empty, pred_empty, empty_policy)


def hd95(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, classes: Sequence[int], spacing: Sequence[float] | None = None, empty_policy: str = "one") -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance per class (MONAI), in spacing units.

    Conventions: ground truth empty -> ``empty_policy`` (``one``: 0 when the prediction is empty too,
    as Dice scores it 1; else NaN); prediction empty, ground truth not -> NaN. NaN = undefined:
    callers count it and leave it out of means.
    """
    p = torch.as_tensor(np.asarray(pred)).long()
    t = torch.as_tensor(np.asarray(target)).long()
    out = np.full(len(classes), np.nan)
    gt_empty, pred_empty = np.zeros(len(classes), bool), np.zeros(len(classes), bool)
    for i, c in enumerate(classes):
        pc, tc = p == c, t == c
        has_p, has_t = bool(pc.any()), bool(tc.any())
        gt_empty[i], pred_empty[i] = not has_t, not has_p
        if not (has_p and has_t):
            continue
        y_pred = torch.stack([~pc, pc])[None].float()
        y = torch.stack([~tc, tc])[None].float()
        sp = None if spacing is None else [float(s) for s in spacing]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # MONAI 1.5+ deprecation notice inside its own call
            v = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=sp)
        out[i] = float(v.reshape(-1)[0])
    return apply_empty_policy(out, gt_empty, pred_empty, empty_policy, distance=True)


def paper_score(dice: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Per-sample paper score: mean over the scored foreground classes of (N, C) values -> (N,)."""
    return dice[:, list(classes)].mean(axis=1)


def nanmean(values: Sequence[float] | np.ndarray) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def slug(name: str) -> str:
    """A class or site name as a metric-name suffix: lower case, [a-z0-9_] only."""
    out = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
    return "_".join(part for part in out.split("_") if part)
