"""How segmentation predictions are scored, and the trivial predictors every result is compared with.

- ``dice``/``iou`` (and ``iou3d``/``dice3d``): the paper's numbers at the resized resolution
  (lvmbench.metrics.segmentation); ``*_clean``: the same overlaps at the case's native resolution,
  per class and averaged over the foreground classes, plus HD95 in physical units.
- OOD sets (``task.ood``): scored with the same checkpoint; ``<metric>_avg`` is the mean over the
  in-distribution and OOD sets (the paper's Table 4 "Avg"), ``_ood`` the OOD mean, ``_gap`` in - out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lvmbench.data.cases import Case
from lvmbench.heads.unet import UNet
from lvmbench.metrics.segmentation import clean_overlap, hd95, nanmean, slug
from lvmbench.metrics.surface import nsd_per_class

Scores = tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int], chunk: int = 16) -> np.ndarray:
    """(N, K, S, S) logits -> (N, H, W) uint8 labels at the native size (bilinear on the logits)."""
    out = []
    for i in range(0, len(logits), chunk):
        part = logits[i : i + chunk]
        if tuple(part.shape[-2:]) != tuple(size):
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        out.append(part.argmax(1).to(torch.uint8).cpu())
    return torch.cat(out).numpy()


def clean_scores(pred: np.ndarray, target: np.ndarray, num_classes: int, spacing: list[float] | None, with_hd95: bool, nsd_tolerance: float | None = None, empty_policy: str = "one") -> dict[str, np.ndarray]:
    """Per-class Dice/IoU (all voxels of the case pooled), HD95 and NSD (at ``nsd_tolerance``, none =
    not scored) at native resolution; classes absent from ``target`` scored by ``empty_policy``."""
    dice, iou = clean_overlap(torch.from_numpy(pred), torch.from_numpy(target), num_classes, empty_policy)
    out = {"dice": dice, "iou": iou}
    fg = list(range(1, num_classes))
    if with_hd95:
        out["hd95"] = np.concatenate([[np.nan], hd95(pred, target, fg, spacing, empty_policy)])
    if nsd_tolerance is not None:
        out["nsd"] = np.concatenate([[np.nan], nsd_per_class(pred, target, fg, nsd_tolerance, spacing, empty_policy)])
    return out


def clean_case_values(row: dict[str, np.ndarray], num_classes: int) -> dict[str, Any]:
    """A case's record entries from its ``clean_scores``: each metric's mean over the foreground
    classes (NaN, stored as null, when every class is undefined), per-class Dice on multi-class tasks."""
    values: dict[str, Any] = {f"{name}_clean": nanmean(row[name][1:]) for name in ("dice", "iou", "hd95", "nsd") if name in row}
    if num_classes > 2:
        values["dice_clean_per_class"] = row["dice"][1:]
    return values


def summarize_clean(records: list[dict[str, np.ndarray]], class_names: list[str], prefix: str = "") -> tuple[dict[str, float], dict[str, int]]:
    """Mean over cases of the per-case mean over foreground classes, plus per-class means."""
    metrics: dict[str, float] = {}
    undefined: dict[str, int] = {}
    fg = range(1, len(class_names))
    for name in ("dice", "iou", "hd95", "nsd"):
        if not records or name not in records[0]:
            continue
        per_case = np.array([r[name] for r in records], dtype=np.float64)  # (cases, K)
        case_means = np.array([nanmean(row[1:]) for row in per_case])
        value = nanmean(case_means)
        if not np.isnan(value):
            metrics[f"{name}_clean{prefix}"] = value
        if name == "hd95":
            undefined[f"hd95_clean{prefix}"] = int(np.isnan(per_case[:, 1:]).sum())
        if len(class_names) > 2:
            for c in fg:
                v = nanmean(per_case[:, c])
                if not np.isnan(v):
                    metrics[f"{name}_clean_{slug(class_names[c])}{prefix}"] = v
    return metrics, undefined


def case_record(case: Case, split: str, score: float, values: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"case": case.id, "group": case.group, "split": split, "score": round(float(score), 6)}
    for k, v in values.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            rec[k] = [None if np.isnan(x) else round(float(x), 6) for x in np.asarray(v, dtype=np.float64)]
        else:
            rec[k] = None if v is None or np.isnan(v) else round(float(v), 6)
    return rec


def ood_summary(metrics: dict[str, float], names: list[str], keys: tuple[str, ...] = ("dice",)) -> dict[str, float]:
    """Mean over in-distribution + OOD sets (the paper's Table 4 'Avg'), OOD mean and in-out gap."""
    extra: dict[str, float] = {}
    for key in keys:
        if key not in metrics:
            continue
        ood = [metrics[f"{key}_{slug(n)}"] for n in names if f"{key}_{slug(n)}" in metrics]
        if not ood:
            continue
        extra[f"{key}_avg"] = float(np.mean([metrics[key], *ood]))
        extra[f"{key}_ood"] = float(np.mean(ood))
        extra[f"{key}_gap"] = float(metrics[key] - np.mean(ood))
    return extra


class TrivialMask(nn.Module):
    """A predictor that ignores the image: the same label map (S, S) for every image or slice, with
    the U-Net's interface, so the baseline goes through the very scorer the model does."""

    def __init__(self, model: UNet, num_classes: int, labels: torch.Tensor):
        super().__init__()
        self.in_channels, self.encoder = model.in_channels, model.encoder
        self.register_buffer("template", F.one_hot(labels.long(), num_classes).permute(2, 0, 1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.template.to(x.device)
        if t.shape[-2:] != x.shape[-2:]:
            t = F.interpolate(t[None], size=x.shape[-2:], mode="nearest")[0]
        return t.expand(x.shape[0], -1, -1, -1)


def trivial_predictors(model: UNet, num_classes: int, train_masks: list[torch.Tensor], score_classes: list[int]) -> dict[str, TrivialMask]:
    """What a model that learned nothing about the images can predict (the baseline is the best of
    them under the task's own scorer):

    - ``all background``: class 0 everywhere (under the paper's empty-empty = 1 rule it scores the
      share of empty images);
    - ``all foreground``: the scored foreground class most frequent in the training masks, everywhere;
    - ``training mean mask``: at each pixel, the label most frequent there over the training
      images (slices), i.e. where the object usually is.
    """
    masks = torch.cat([m.reshape(-1, *m.shape[-2:]) for m in train_masks]).long()  # (n, S, S)
    size = masks.shape[-2:]
    counts = torch.stack([(masks == c).sum(0) for c in range(num_classes)])  # (K, S, S)
    totals = counts.flatten(1).sum(1)
    fg = max(score_classes, key=lambda c: (int(totals[c]), -c))
    return {
        "all background": TrivialMask(model, num_classes, torch.zeros(size, dtype=torch.long)),
        "all foreground": TrivialMask(model, num_classes, torch.full(size, fg, dtype=torch.long)),
        "training mean mask": TrivialMask(model, num_classes, counts.argmax(0)),
    }
