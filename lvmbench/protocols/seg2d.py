"""2D segmentation: U-Net (smp decoder) on the encoder's pyramid, trained end to end.

Metrics (see ``lvmbench.metrics.segmentation``): ``dice``/``iou`` are LVM-Med's per-image foreground
scores at the resized resolution (the paper's Table 2 numbers); ``dice_clean``/``iou_clean``/
``hd95_clean`` score the prediction upsampled to each image's native size. Validation selects the
checkpoint on ``dice``; out-of-distribution sets get the same metrics with a ``_<set>`` suffix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lvmbench.metrics.segmentation import paper_score, per_sample_overlap, slug
from lvmbench.protocols import declared
from lvmbench.protocols.base import PROTOCOLS, RunContext
from lvmbench.protocols.seg_common import SegProtocol
from lvmbench.protocols.seg_data import Prepared
from lvmbench.protocols.seg_scores import Scores, case_record, clean_case_values, clean_scores, summarize_clean, upsample_argmax
from lvmbench.protocols.seg_train import predict_logits
from lvmbench.protocols.settings import SegSettings


def evaluate_2d(ctx: RunContext, model, prep: Prepared, hp: SegSettings, split: str, suffix: str = "") -> tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]:
    """Paper and clean metrics of one set of images, with one record per image."""
    k, names = ctx.task.num_classes, list(ctx.task.classes)
    x, y = prep.stacked()
    dice_rows, iou_rows, clean, records = [], [], [], []
    for i, logits in predict_logits(ctx, model, x, hp.eval_batch_size):
        pred = logits.argmax(1).cpu()
        d, u = per_sample_overlap(pred, y[i : i + len(pred)], k)
        dice_rows.append(d)
        iou_rows.append(u)
        for j in range(len(pred)):
            if prep.native is None:
                continue
            target = prep.native[i + j]
            native_pred = upsample_argmax(logits[j : j + 1], target.shape)[0]
            clean.append(clean_scores(native_pred, target, k, None, hp.hd95, hp.nsd_tolerance_mm, hp.empty_policy))
    dice, iou = np.concatenate(dice_rows), np.concatenate(iou_rows)
    per_image = paper_score(dice, hp.score_classes)
    per_image_iou = paper_score(iou, hp.score_classes)
    metrics = {f"dice{suffix}": float(per_image.mean()), f"iou{suffix}": float(per_image_iou.mean())}
    if len(hp.score_classes) > 1:
        for c in hp.score_classes:
            metrics[f"dice_{slug(names[c])}{suffix}"] = float(dice[:, c].mean())
    undefined: dict[str, int] = {}
    if clean:
        m, undefined = summarize_clean(clean, names, suffix)
        metrics.update(m)
    for n, case in enumerate(prep.cases):
        values: dict[str, Any] = {"iou": per_image_iou[n]}
        if clean:
            values.update(clean_case_values(clean[n], k))
        records.append(case_record(case, split, per_image[n], values))
    return metrics, records, undefined


@PROTOCOLS.register("seg2d")
class Seg2D(declared.Seg2D, SegProtocol):
    def training_arrays(self, ctx: RunContext, hp: SegSettings, train: Prepared) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        return (*train.stacked(), {})

    def evaluate(self, ctx: RunContext, model, prep: Prepared, hp: SegSettings, split: str, suffix: str = "", validation: bool = False) -> Scores:
        return evaluate_2d(ctx, model, prep, hp, split, suffix)
