"""Scores of the prompt protocols (``lvmbench.protocols.seg_prompt``): per prompted image or slice
at the mask grid, per volume (``iou3d_prompt``: the slice average, not Table 3's volumetric IoU),
and at native resolution (``*_clean``); plus the box-filling reference predictor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from lvmbench.protocols.seg_data import Prepared
from lvmbench.protocols.seg_scores import clean_scores, summarize_clean


@dataclass
class PromptSet:
    """One split as prompted items (images, or slices of volumes): cached encoder features, the
    object at the mask grid, its box there, and which case (and slice) each item came from."""

    features: torch.Tensor  # (n, C, h, w), on the CPU
    targets: torch.Tensor  # (n, M, M) uint8 0/1
    boxes: torch.Tensor  # (n, 4) mask-grid xyxy; the paper's jittered/random boxes with paper_boxes
    owner: list[int]
    slice_of: list[int]
    prep: Prepared
    unprompted: int = 0  # items left out: empty ground truth (clean rule)
    extra: dict[str, Any] = field(default_factory=dict)


Scores = tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]


def clean_record(row: dict[str, np.ndarray]) -> dict[str, float | None]:
    """The object's native-size Dice / IoU (and NSD when scored) for a per-case record; null where
    the empty policy leaves the case out."""
    return {f"{k}_clean": (None if np.isnan(row[k][1]) else round(float(row[k][1]), 6)) for k in ("dice", "iou", "nsd") if k in row}


def score_images(ps: PromptSet, logits: torch.Tensor, dice: np.ndarray, iou: np.ndarray, native: list[np.ndarray] | None, classes: list[int], hp: Any, split: str, suffix: str) -> Scores:
    """2D: mean Dice/IoU over prompted images; one record per image (unprompted ones: score None)."""
    metrics = {f"dice{suffix}": float(np.mean(dice)) if len(dice) else float("nan"), f"iou{suffix}": float(np.mean(iou)) if len(iou) else float("nan")}
    rows, records, seen = [], [], set()
    for j, n in enumerate(ps.owner):
        case = ps.prep.cases[n]
        rec: dict[str, Any] = {"case": case.id, "group": case.group, "split": split, "score": round(float(dice[j]), 6), "iou": round(float(iou[j]), 6), "box": [round(float(v), 2) for v in ps.boxes[j]]}
        if native is not None and n not in seen:
            target = np.isin(native[n], classes).astype(np.uint8)
            p = (F.interpolate(logits[j][None, None], size=target.shape, mode="bilinear", align_corners=False)[0, 0] > 0).numpy().astype(np.uint8)
            row = clean_scores(p, target, 2, None, hp.hd95, hp.nsd_tolerance_mm, hp.empty_policy)
            rows.append(row)
            rec.update(clean_record(row))
        seen.add(n)
        records.append(rec)
    for n, case in enumerate(ps.prep.cases):
        if n not in seen:
            records.append({"case": case.id, "group": case.group, "split": split, "score": None, "prompted": 0})
    undefined: dict[str, int] = {}
    if rows:
        m, undefined = summarize_clean(rows, ["background", "object"], suffix)
        metrics.update(m)
    return metrics, records, undefined

def score_volumes(ps: PromptSet, logits: torch.Tensor, dice: np.ndarray, iou: np.ndarray, native: list[np.ndarray] | None, classes: list[int], hp: Any, split: str, suffix: str) -> Scores:
    """3D: per volume the mean over its prompted slices (``iou3d_prompt``, ``dice3d_prompt``), the
    per-slice mean over all of them (``dice_prompt``); one record per volume with its boxes."""
    per_vol: dict[int, list[int]] = {}
    for j, n in enumerate(ps.owner):
        per_vol.setdefault(n, []).append(j)
    vol_iou = {n: float(np.mean(iou[js])) for n, js in per_vol.items()}
    vol_dice = {n: float(np.mean(dice[js])) for n, js in per_vol.items()}
    nan = float("nan")
    metrics = {
        f"iou3d_prompt{suffix}": float(np.mean(list(vol_iou.values()))) if vol_iou else nan,
        f"dice3d_prompt{suffix}": float(np.mean(list(vol_dice.values()))) if vol_dice else nan,
        f"dice_prompt{suffix}": float(np.mean(dice)) if len(dice) else nan,
    }
    rows, records = [], []
    for n, case in enumerate(ps.prep.cases):
        js = per_vol.get(n, [])
        rec: dict[str, Any] = {"case": case.id, "group": case.group, "split": split, "score": round(vol_iou[n], 6) if js else None,
                               "dice_prompt": round(vol_dice[n], 6) if js else None, "prompted_slices": len(js),
                               "boxes": {str(ps.slice_of[j]): [round(float(v), 2) for v in ps.boxes[j]] for j in js}}
        if native is not None:
            target = np.isin(native[n], classes).astype(np.uint8)
            pred = np.zeros_like(target)
            for j in js:
                if hp.paper_boxes and not ps.targets[j].any():
                    continue  # the paper's random-box slices are scored at the grid only
                pred[ps.slice_of[j]] = (F.interpolate(logits[j][None, None], size=target.shape[1:], mode="bilinear", align_corners=False)[0, 0] > 0).numpy()
            row = clean_scores(pred, target, 2, case.meta.get("spacing"), hp.hd95, hp.nsd_tolerance_mm, hp.empty_policy)
            rows.append(row)
            rec.update(clean_record(row))
        records.append(rec)
    undefined: dict[str, int] = {}
    if rows:
        m, undefined = summarize_clean(rows, ["background", "object"], suffix)
        metrics.update(m)
    return metrics, records, undefined


def box_fill(ps: PromptSet, hp: Any) -> torch.Tensor:
    """Logits of the predictor that fills each test box: what the box alone is worth."""
    grid = hp.image_size // 4
    ar = torch.arange(grid).float()
    b = ps.boxes
    inside_x = (ar[None] >= b[:, 0:1]) & (ar[None] <= b[:, 2:3])
    inside_y = (ar[None] >= b[:, 1:2]) & (ar[None] <= b[:, 3:4])
    return torch.where(inside_y[:, :, None] & inside_x[:, None, :], 1.0, -1.0)
