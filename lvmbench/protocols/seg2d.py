"""2D segmentation: U-Net (smp decoder) on the encoder's pyramid, trained end to end.

Metrics (see ``lvmbench.metrics.segmentation``): ``dice``/``iou`` are LVM-Med's per-image foreground
scores at the resized resolution (the paper's Table 2 numbers); ``dice_clean``/``iou_clean``/
``hd95_clean`` score the prediction upsampled to each image's native size. Validation selects the
checkpoint on ``dice``; out-of-distribution sets get the same metrics with a ``_<set>`` suffix.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from lvmbench.metrics.segmentation import paper_score, per_sample_overlap, slug
from lvmbench.protocols.base import PROTOCOLS, Protocol, ProtocolOutput, RunContext, seed_everything
from lvmbench.protocols.seg_common import (
    SegHParams,
    build_model,
    case_record,
    clean_scores,
    ood_readers,
    ood_summary,
    predict_logits,
    on_device,
    prepare_cases,
    runtime_hparams,
    summarize_clean,
    train_model,
    upsample_argmax,
)
from lvmbench.protocols.seg_data import Prepared


def evaluate_2d(ctx: RunContext, model, prep: Prepared, hp: SegHParams, split: str, suffix: str = "") -> tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]:
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
            clean.append(clean_scores(native_pred, target, k, None, hp.hd95))
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
            c = clean[n]
            values.update({"dice_clean": np.nanmean(c["dice"][1:]), "iou_clean": np.nanmean(c["iou"][1:])})
            if "hd95" in c:
                hd = c["hd95"][1:]
                values["hd95_clean"] = float(np.nanmean(hd)) if not np.isnan(hd).all() else None
            if k > 2:
                values["dice_clean_per_class"] = c["dice"][1:]
        records.append(case_record(case, split, per_image[n], values))
    return metrics, records, undefined


@PROTOCOLS.register("seg2d")
class Seg2D(Protocol):
    name = "seg2d"
    families = ("segmentation",)

    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp = SegHParams.from_ctx(ctx)
        gen = seed_everything(ctx.seed)
        # Built first, so its initialisation does not depend on how many loaders ran before it.
        model = build_model(ctx)
        t0 = time.perf_counter()
        splits = {"train": ctx.train_cases(), "val": ctx.data.split.val, "test": ctx.data.split.test}
        reader = ctx.data.reader
        data = {s: prepare_cases(ctx, reader, cs, hp, native=s == "test", volumes=False, desc=f"decode:{s}") for s, cs in splits.items() if cs}
        oods = [(o, prepare_cases(ctx, r, cs, hp, native=True, volumes=False, desc=f"decode:{o.name}")) for o, r, cs in ood_readers(ctx)]
        t_data = time.perf_counter() - t0

        x_tr, y_tr = on_device(ctx, *data["train"].stacked())
        n = len(x_tr)
        bs = min(hp.batch_size, n)
        stop = (n // bs) * bs if n > bs else n  # drop the last partial batch (BatchNorm on 1 image)

        def batches(epoch: int):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, stop, bs):
                idx = perm[i : i + bs]
                yield x_tr[idx], y_tr[idx]

        def validate() -> float:
            return evaluate_2d(ctx, model, data["val"], dataclasses.replace(hp, hd95=False), "val")[0]["dice"]

        t1 = time.perf_counter()
        chosen, history, train_timings = train_model(ctx, model, hp, batches, max(1, stop // bs), validate if "val" in data else None)
        t_train = time.perf_counter() - t1

        metrics, per_case, undefined = evaluate_2d(ctx, model, data["test"], hp, "test")
        counts = {s: len(cs) for s, cs in splits.items()}
        for o, prep in oods:
            m, recs, und = evaluate_2d(ctx, model, prep, hp, f"ood:{o.name}", f"_{slug(o.name)}")
            metrics.update(m)
            per_case += recs
            undefined.update(und)
            counts[f"ood:{o.name}"] = len(prep.cases)
        metrics.update(ood_summary(metrics, [o.name for o, _ in oods]))
        used = {**ctx.hparams, **dataclasses.asdict(hp), "selected": chosen, "preprocess": ctx.task.preprocess.model_dump(), **runtime_hparams(ctx)}
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts=counts,
            extra={"val_history": history, "hd95_undefined": undefined, "ood_sets": [o.name for o, _ in oods]},
            timings={"data_s": t_data, "train_s": t_train, **train_timings, "total_s": time.perf_counter() - t0},
        )
