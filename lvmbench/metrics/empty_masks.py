"""What a class absent from a case's ground truth scores: the ``empty_policy`` of the clean scorers.

Evaluators disagree, and their numbers move with it on tasks where a class is often absent (a
structure missing from a volume, a slice without the object):

==========  =============================  ==================================  ===========================
policy      ground truth empty,            ground truth empty,                 who does this
            prediction empty               prediction not empty
==========  =============================  ==================================  ===========================
``one``     Dice, IoU, NSD 1; HD95 0       Dice, IoU, NSD 0; HD95 undefined    LVM-Med (eps = 1e-6 rule),
                                                                               MedSAM's FLARE evaluation
``zero``    Dice, IoU, NSD 0; HD95         Dice, IoU, NSD 0; HD95 undefined    scorers with 0/0 := 0
            undefined
``skip``    every metric undefined         every metric undefined              MONAI ``ignore_empty``,
                                                                               nnU-Net (NaN, left out)
==========  =============================  ==================================  ===========================

Undefined = NaN: left out of every mean and stored as null per case. A distance has no worst
value, so HD95 is undefined wherever the overlap scores call the case a failure; it is also
undefined (under every policy) when the ground truth has the class and the prediction does not,
where Dice, IoU and NSD are 0. The paper metrics (per-image ``dice``/``iou`` at the resized
resolution, eps = 1e-6) keep LVM-Med's rule whatever the policy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

EmptyPolicy = Literal["one", "zero", "skip"]
EMPTY_POLICIES: tuple[str, ...] = ("one", "zero", "skip")


def _check(policy: str) -> None:
    if policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy '{policy}' is not one of {', '.join(EMPTY_POLICIES)}")


def empty_gt_score(policy: str, pred_empty: np.ndarray | bool) -> np.ndarray:
    """Dice / IoU / NSD of classes absent from the ground truth, given whether the prediction is
    empty too (scalar or per-class array in, float array of the same shape out)."""
    _check(policy)
    pe = np.asarray(pred_empty, dtype=bool)
    if policy == "skip":
        return np.full(pe.shape, np.nan)
    if policy == "zero":
        return np.zeros(pe.shape)
    return pe.astype(np.float64)


def empty_gt_distance(policy: str, pred_empty: np.ndarray | bool) -> np.ndarray:
    """HD95 of classes absent from the ground truth: 0 where the policy calls the case perfect
    (``one``, prediction empty too), NaN everywhere else."""
    _check(policy)
    pe = np.asarray(pred_empty, dtype=bool)
    return np.where(pe & (policy == "one"), 0.0, np.nan)


def apply_empty_policy(values: np.ndarray, gt_empty: np.ndarray, pred_empty: np.ndarray, policy: str, distance: bool = False) -> np.ndarray:
    """``values`` (per class) with the classes absent from the ground truth replaced by the
    policy's score; ``distance``: HD95-style (lower is better) instead of Dice-style."""
    out = np.asarray(values, dtype=np.float64).copy()
    ge = np.asarray(gt_empty, dtype=bool)
    fill = (empty_gt_distance if distance else empty_gt_score)(policy, np.asarray(pred_empty, dtype=bool))
    out[ge] = fill[ge]
    return out
