"""Scores of the prompt protocols (``lvmbench.protocols.seg_prompt``): per prompted image or slice
at the mask grid, per volume (``iou3d_prompt``: the slice average, not Table 3's volumetric IoU),
and at native resolution (``*_clean``); plus the box-filling reference predictor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from lvmbench.data.prompts.boxes import fill_boxes
from lvmbench.protocols.seg_data import Prepared
from lvmbench.protocols.seg_scores import clean_scores, summarize_clean


@dataclass
class PromptSet:
    """One split as prompted items (images, or slices of volumes): cached encoder features, the
    object at the mask grid, its prompts at the rule's grid (``frame`` px a side; x image_size /
    frame gives the image pixels SAM reads), and which case (and slice) each item came from."""

    features: torch.Tensor  # (n, C, h, w), on the CPU
    targets: torch.Tensor  # (n, M, M) uint8 0/1
    boxes: torch.Tensor | None  # (n, 4) xyxy at the rule's grid; None: points only
    owner: list[int]
    slice_of: list[int]
    prep: Prepared
    unprompted: int = 0  # items left out: empty ground truth under empty: skip
    points: torch.Tensor | None = None  # (n, k, 2) xy at the rule's grid
    labels: torch.Tensor | None = None  # (n, k) SAM labels
    empty: torch.Tensor | None = None  # (n,) the object is absent (a random box, scored empty = 1)
    frame: int = 0  # the rule's grid side; 0: the mask grid (tests)
    extra: dict[str, Any] = field(default_factory=dict)

    def grid_scale(self) -> float:
        """Rule-grid pixels -> mask-grid pixels."""
        return 1.0 if not self.frame else self.targets.shape[-1] / self.frame


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
        rec: dict[str, Any] = {"case": case.id, "group": case.group, "split": split, "score": round(float(dice[j]), 6), "iou": round(float(iou[j]), 6)}
        rec.update(prompt_record(ps, j))
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
                               "boxes": {str(ps.slice_of[j]): prompt_record(ps, j).get("box") for j in js}}
        if native is not None:
            target = np.isin(native[n], classes).astype(np.uint8)
            pred = np.zeros_like(target)
            for j in js:
                if ps.empty is not None and bool(ps.empty[j]):
                    continue  # random-box slices (empty: random_box) are scored at the grid only
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


def prompt_record(ps: PromptSet, j: int) -> dict[str, Any]:
    """Item j's prompt as a per-case record holds it (at the rule's grid)."""
    out: dict[str, Any] = {}
    if ps.boxes is not None:
        out["box"] = [round(float(v), 2) for v in ps.boxes[j]]
    if ps.points is not None and ps.points.shape[1]:
        out["points"] = [[round(float(x), 2), round(float(y), 2)] for x, y in ps.points[j]]
        out["point_labels"] = [int(v) for v in ps.labels[j]] if ps.labels is not None else []
    return out


def box_fill(ps: PromptSet, hp: Any) -> torch.Tensor:
    """Logits of the predictor that fills each item's prompt box (the same boxes the model got):
    what the box alone is worth. Items without a box predict background."""
    grid = ps.targets.shape[-1] if len(ps.targets) else hp.image_size // 4
    if ps.boxes is None:
        return torch.full((len(ps.owner), grid, grid), -1.0)
    return fill_boxes(ps.boxes, grid, ps.grid_scale())


def metric_definition(primary: str, grid: int, volumes: bool) -> str:
    """A short id of how the primary metric is computed (``extra.conventions``)."""
    base = primary.split("_")[0]
    kind = "iou" if base.startswith("iou") else "dice"
    if not volumes:
        return f"{kind}-per-image@{grid}px"
    if base.endswith("3d"):
        return f"{kind}-per-slice-mean-per-volume@{grid}px"
    return f"{kind}-per-slice@{grid}px"
