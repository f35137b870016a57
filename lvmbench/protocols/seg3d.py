"""Slice-wise 3D segmentation: a 2D U-Net trained on slices, scored on reassembled volumes.

As LVM-Med's R50 code (reference §1.4): volumes are sliced once along the reader's axis; the
training set is every training slice that contains a scored class plus an equal number drawn once,
with replacement, from the slices without it (``balanced: true``); the checkpoint is selected on the
validation volumes' volumetric IoU of the scored class(es).

Metrics: ``iou3d``/``dice3d`` — per volume, all voxels of the scored class(es) pooled at the resized
in-plane resolution, averaged over volumes (the paper's Table 3 "3D IoU" for MMWHS = left atrium);
``dice``/``iou`` — per-slice scores averaged over all slices (what the same code logs as 2D Dice,
and the "2D Dice" of the prostate table); ``*_clean`` — per volume at native in-plane resolution,
per class and averaged over the foreground classes, HD95 in millimetres (voxel spacing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lvmbench.metrics.segmentation import paper_score, per_sample_overlap, volume_overlap
from lvmbench.protocols import declared
from lvmbench.protocols.base import PROTOCOLS, RunContext
from lvmbench.protocols.seg_common import SegProtocol
from lvmbench.protocols.seg_data import Prepared
from lvmbench.protocols.seg_scores import Scores, case_record, clean_case_values, clean_scores, summarize_clean, upsample_argmax
from lvmbench.protocols.seg_train import predict_logits
from lvmbench.protocols.settings import Seg3DSettings, SegSettings


def predict_volume(ctx: RunContext, model, slices: torch.Tensor, batch_size: int, native_hw: tuple[int, int] | None) -> tuple[torch.Tensor, np.ndarray | None]:
    """uint8 slices (D, S, S) of one volume -> predicted labels (D, S, S) in slice order, and (D, H, W)
    at the native in-plane size when asked."""
    small, native = [], []
    for _, logits in predict_logits(ctx, model, slices[:, None], batch_size):
        small.append(logits.argmax(1).to(torch.uint8).cpu())
        if native_hw is not None:
            native.append(upsample_argmax(logits, native_hw))
    return torch.cat(small), (np.concatenate(native) if native_hw is not None else None)


def balanced_slices(masks: list[torch.Tensor], score_classes: list[int], balanced: bool, rng: np.random.Generator) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """(volume, slice) pairs to train on: every slice with a scored class + as many drawn (with
    replacement, once) from the others; all slices when ``balanced`` is off or one side is empty."""
    have, non = [], []
    for v, m in enumerate(masks):
        present = torch.zeros(m.shape[0], dtype=torch.bool)
        for c in score_classes:
            present |= (m == c).flatten(1).any(1)
        for d in range(m.shape[0]):
            (have if present[d] else non).append((v, d))
    if balanced and have and non:
        pick = rng.choice(len(non), size=len(have), replace=True)
        chosen = have + [non[i] for i in pick]
    else:
        chosen = have + non
    return chosen, {"slices_with_class": len(have), "slices_without": len(non), "train_slices": len(chosen)}


def evaluate_3d(ctx: RunContext, model, prep: Prepared, hp: SegSettings, split: str, suffix: str = "", clean: bool = True) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]:
    k, names = ctx.task.num_classes, list(ctx.task.classes)
    sc = hp.score_classes
    slice_dice, slice_iou, vol_iou, vol_dice, clean_rows, records = [], [], [], [], [], []
    for n, case in enumerate(prep.cases):
        target = prep.native[n] if (clean and prep.native is not None) else None
        pred, native_pred = predict_volume(ctx, model, prep.images[n], hp.eval_batch_size, None if target is None else tuple(target.shape[1:]))
        d, u = per_sample_overlap(pred, prep.masks[n], k)
        slice_dice.append(paper_score(d, sc))
        slice_iou.append(paper_score(u, sc))
        vd, vu = volume_overlap(pred, prep.masks[n], k)
        vol_dice.append(float(vd[sc].mean()))
        vol_iou.append(float(vu[sc].mean()))
        values: dict[str, Any] = {"dice3d": vol_dice[-1], "dice": float(slice_dice[-1].mean())}
        if target is not None:
            row = clean_scores(native_pred, target, k, case.meta.get("spacing"), hp.hd95, hp.nsd_tolerance_mm, hp.empty_policy)
            clean_rows.append(row)
            values.update(clean_case_values(row, k))
        records.append(case_record(case, split, vol_iou[-1], values))
    all_dice, all_iou = np.concatenate(slice_dice), np.concatenate(slice_iou)
    metrics = {
        f"iou3d{suffix}": float(np.mean(vol_iou)),
        f"dice3d{suffix}": float(np.mean(vol_dice)),
        f"dice{suffix}": float(all_dice.mean()),
        f"iou{suffix}": float(all_iou.mean()),
    }
    undefined: dict[str, int] = {}
    if clean_rows:
        m, undefined = summarize_clean(clean_rows, names, suffix)
        metrics.update(m)
    return metrics, records, undefined


@PROTOCOLS.register("seg3d")
class Seg3D(declared.Seg3D, SegProtocol):
    ood_keys = ("dice", "iou3d")

    def training_arrays(self, ctx: RunContext, hp: SegSettings, train: Prepared) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        assert isinstance(hp, Seg3DSettings)
        chosen, slice_counts = balanced_slices(train.masks, hp.score_classes, hp.balanced, np.random.default_rng(ctx.seed))
        x = torch.stack([train.images[v][d] for v, d in chosen])[:, None]
        y = torch.stack([train.masks[v][d] for v, d in chosen])
        return x, y, slice_counts

    def evaluate(self, ctx: RunContext, model, prep: Prepared, hp: SegSettings, split: str, suffix: str = "", validation: bool = False) -> Scores:
        return evaluate_3d(ctx, model, prep, hp, split, suffix, clean=not validation)
