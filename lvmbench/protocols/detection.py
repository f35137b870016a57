"""Detection protocol: Faster R-CNN + FPN over the encoder, trained end to end, validation-selected.

LVM-Med's recipe (reference §1.3): Adam, weight decay 1e-4, constant learning rate, 40 epochs,
512 px keep-ratio resize, horizontal flips, stem + layer1 frozen and BatchNorm statistics frozen,
gradient clipping at 1 (VinDr ``command.sh``), class-balanced oversampling 0.4 (VinDr). Two of its
evaluation choices are flaws and are fixed here: the test images are resized like the training ones
(LVM-Med's unchanged mmdet test pipeline used 1333x800) and the checkpoint with the best validation
AP50 is scored (LVM-Med scored the last epoch). ``paper_eval: true`` reproduces both and flags the
result ``paper-eval``.

Per-case records (test split): ``score`` = the image's own AP50 (COCO rules on that image alone,
mean over the classes it contains; None for an image without boxes), ``tp``/``fp``/``fn`` at
``count_score_thr`` (0.5), ``n_gt`` (boxes per class) and ``dets`` ([label, score, matched at IoU 0.5],
<= 100 per class): ``lvmbench.metrics.detection.ap_from_records`` recomputes the dataset AP50 exactly
from any resample of these records (bootstrap CIs, paired tests).

Training resumes at epoch boundaries (``lvmbench.protocols.resume``, keyed by the unit's result
identity): model, optimiser, epoch, best state and history, removed when the unit finishes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lvmbench.data.batches import batch_bounds
from lvmbench.data.transforms import normalize_batch
from lvmbench.interrupt import interruptible
from lvmbench.metrics.detection import (
    ImageBoxes,
    ap_from_records,
    coco_metrics,
    counts_at,
    match_records,
    random_box_baseline,
)
from lvmbench.protocols import declared
from lvmbench.protocols.base import (
    PROTOCOLS,
    Protocol,
    ProtocolOutput,
    RunContext,
    seed_everything,
)
from lvmbench.protocols.det import get_backend
from lvmbench.protocols.det.data import (
    DetectionDataset,
    Resize,
    collate,
    hflip,
    repeat_factor_indices,
)
from lvmbench.protocols.epoch_log import epoch_line
from lvmbench.protocols.features import autocast, loader_workers
from lvmbench.protocols.resume import Resume
from lvmbench.protocols.schedule import adam, make_scheduler, optimiser_step
from lvmbench.protocols.selection import FiniteLoss, require_validation
from lvmbench.protocols.settings import DetectionSettings


@PROTOCOLS.register("detection")
class Detection(declared.Detection, Protocol):
    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp: DetectionSettings = ctx.settings  # type: ignore[assignment]
        backend = get_backend(hp.backend)
        paper = hp.paper_eval
        if not paper:
            require_validation(ctx, ctx.data.split.val)
        select = str(hp.select_metric)
        size = int(ctx.task.preprocess.size)
        channels = int(ctx.task.preprocess.channels)
        classes = ctx.task.classes
        amp = ctx.run.amp
        t0 = time.perf_counter()
        seed_everything(ctx.seed)

        splits = {"train": ctx.train_cases(), "val": ctx.data.split.val, "test": ctx.data.split.test}
        train_resize = Resize(hp.resize, size)
        test_resize = Resize("mmdet_test", size) if paper else train_resize
        cache = ctx.decoded_cache
        ds = {
            "train": DetectionDataset(ctx.data.reader, splits["train"], train_resize, channels, cache),
            "val": DetectionDataset(ctx.data.reader, splits["val"], test_resize, channels, cache),
            "test": DetectionDataset(ctx.data.reader, splits["test"], test_resize, channels, cache),
        }

        encoder = ctx.make_encoder()
        norm = ctx.input_norm(encoder.input_spec)
        model = backend.build(encoder, len(classes), hp).to(ctx.device)
        frozen = backend.body(model).freeze(hp.frozen_stages, hp.norm_eval)
        params = [p for p in model.parameters() if p.requires_grad]
        epochs, bs = hp.epochs, hp.batch_size
        train_labels = [lab for _, lab in ds["train"].targets]

        def steps_per_epoch() -> int:
            return len(batch_bounds(len(repeat_factor_indices(train_labels, len(classes), hp.oversample_thr)), bs, hp.drop_last))

        def new_optimiser() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
            opt = adam(params, ctx.device, lr=hp.lr, weight_decay=hp.weight_decay)
            return opt, make_scheduler(opt, hp.schedule, epochs, steps_per_epoch())

        opt, sched = new_optimiser()
        guard = FiniteLoss("detection")

        def to_input(sample: dict) -> torch.Tensor:
            x = sample["image"].to(ctx.device, non_blocking=True)[None]
            return normalize_batch(x, norm)[0]

        def predict(name: str) -> list[ImageBoxes]:
            model.eval()
            out: list[ImageBoxes] = []
            dl = DataLoader(ds[name], batch_size=bs, num_workers=loader_workers(ctx), collate_fn=collate)
            with torch.inference_mode():
                for batch in interruptible(tqdm(dl, desc=f"detect:{name}", disable=not ctx.progress, leave=False)):
                    with autocast(ctx.device, amp):
                        preds = backend.predict(model, [to_input(s) for s in batch])
                    for s, p in zip(batch, preds):
                        sy, sx = s["scale"]
                        b = p["boxes"].float().cpu().numpy() / np.array([sx, sy, sx, sy])
                        out.append(ImageBoxes(b, p["labels"].cpu().numpy(), p["scores"].float().cpu().numpy()))
            return out

        truth: dict[str, list[ImageBoxes]] = {}

        def ground_truth(name: str) -> list[ImageBoxes]:
            if name not in truth:  # native-size boxes: read once, scored every epoch
                truth[name] = [ds[name].ground_truth(i) for i in range(len(ds[name]))]
            return truth[name]

        def evaluate(name: str, preds: list[ImageBoxes]) -> dict[str, float]:
            d = ds[name]
            return coco_metrics(ground_truth(name), preds, classes, [d.original_size(i) for i in range(len(d))])

        def validation_score(preds: list[ImageBoxes]) -> float:
            """AP50 through the per-image match records (equal to pycocotools' to 1e-9, tested;
            ~20x faster); the other metrics through pycocotools."""
            if select == "ap50":
                return ap_from_records(match_records(ground_truth("val"), preds, 0.5))[0]
            return evaluate("val", preds)[select]

        # Resume state (lvmbench.protocols.resume) --------------------------------------------
        resume = Resume(ctx)
        state = {"epoch": 0, "best_val": -1.0, "best_epoch": 0, "best_state": None, "history": [], "train_s": 0.0, "steps": 0}
        saved = resume.restore(model, opt, sched)
        if saved is not None:
            state = {k: saved[k] for k in state}

        for epoch in range(int(state["epoch"]) + 1, epochs + 1):
            # Per-epoch seeds: a resumed run draws the same order, flips and RPN samples.
            torch.manual_seed(ctx.seed * 100_003 + epoch)
            gen = torch.Generator().manual_seed(ctx.seed * 100_003 + epoch)
            order = repeat_factor_indices(train_labels, len(classes), hp.oversample_thr)
            perm = [order[i] for i in torch.randperm(len(order), generator=gen).tolist()]
            batches = [list(range(a, b)) for a, b in batch_bounds(len(perm), bs, hp.drop_last)]  # every image unless drop_last
            dl = DataLoader(torch.utils.data.Subset(ds["train"], perm), batch_sampler=batches, num_workers=loader_workers(ctx), collate_fn=collate)
            model.train()
            t_ep = time.perf_counter()
            losses: list[float] = []
            lrs: list[float] = []  # the rate each step used
            for batch in tqdm(dl, desc=f"detection e{epoch}/{epochs}", disable=not ctx.progress, leave=False):
                if hp.hflip:  # resolved: false without augment
                    flips = torch.rand(len(batch), generator=gen) < 0.5
                    batch = [hflip(s) if f else s for s, f in zip(batch, flips.tolist())]
                images = [to_input(s) for s in batch]
                targets = [{"boxes": s["boxes"].to(ctx.device), "labels": s["labels"].to(ctx.device)} for s in batch]
                with autocast(ctx.device, amp):
                    loss_dict = backend.losses(model, images, targets)
                loss = sum(v.float() for v in loss_dict.values())
                guard.check(loss, epoch)
                lrs.append(optimiser_step(loss, opt, sched, params, hp.grad_clip))
                losses.append(float(loss.detach()))
                state["steps"] += 1
            guard.end_epoch(epoch)
            state["train_s"] += time.perf_counter() - t_ep
            rec: dict[str, float] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), "lr": lrs[0] if lrs else hp.lr, "lr_last": lrs[-1] if lrs else hp.lr}
            if not paper and (epoch % hp.val_every == 0 or epoch == epochs):
                val = validation_score(predict("val"))
                rec[f"val_{select}"] = val
                # strict, finite: the earliest epoch wins ties and a NaN score never wins
                if np.isfinite(val) and val > state["best_val"]:
                    state.update(best_val=val, best_epoch=epoch, best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            state["history"].append(rec)
            epoch_line(ctx, epoch, epochs, t_ep, **{k: v for k, v in rec.items() if k not in ("epoch", "lr_last")})
            state["epoch"] = epoch
            if epoch < epochs:
                resume.save_if_due(model, opt, sched, state)

        flags = ["paper-eval"] if paper else []
        if paper:
            chosen = {"epoch": state["epoch"], "rule": "last epoch (paper_eval)"}
        elif state["best_state"] is None:
            chosen = {"epoch": state["epoch"], "rule": "last (every validation score was undefined)"}
            flags.append("validation-undefined")
        else:
            model.load_state_dict(state["best_state"])
            chosen = {"epoch": state["best_epoch"], f"val_{select}": state["best_val"], "rule": f"best validation {select.upper() if select.startswith('ap') else select}"}
        t_test = time.perf_counter()
        preds = predict("test")
        t_score = time.perf_counter()
        metrics = evaluate("test", preds)
        test_s = time.perf_counter() - t_test

        d = ds["test"]
        gts = ground_truth("test")
        sizes = [d.original_size(i) for i in range(len(d))]
        per_case = _per_case(splits["test"], match_records(gts, preds, 0.5), hp.count_score_thr)
        prior = _box_prior(ds["train"])
        chance = random_box_baseline(gts, sizes, prior, classes, seed=ctx.seed)

        resume.clear()
        used = {"image_size": size, "test_resize": test_resize.mode, "frozen_parameters": len(frozen), "frozen_modules": _top_modules(frozen), "selected": chosen, "amp": amp}
        steps = max(int(state["steps"]), 1)
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts={k: len(v) for k, v in splits.items()},
            extra={"val_history": state["history"], "random_box": chance, "baseline": {"metric": "ap50", "value": float(chance["ap50"]), "predictor": "random boxes drawn from the training boxes' sizes"}, "boxes": {k: int(sum(len(t[1]) for t in v.targets)) for k, v in ds.items()}},
            flags=flags,
            timings={"total_s": time.perf_counter() - t0, "train_s": float(state["train_s"]), "train_step_s": float(state["train_s"]) / steps,
                      "test_s": test_s, "test_predict_s": t_score - t_test, "test_score_s": test_s - (t_score - t_test)},
        )


def _per_case(cases, records: list[dict], score_thr: float) -> list[dict[str, Any]]:
    out = []
    for c, r in zip(cases, records):
        tp, fp, fn = counts_at(r, score_thr)
        own = ap_from_records([r])[0] if r["n_gt"] else None
        n_gt = {str(k): v for k, v in r["n_gt"].items()}
        out.append({"case": c.id, "group": c.group, "split": "test", "score": own, "tp": tp, "fp": fp, "fn": fn, "n_gt": n_gt, "dets": r["dets"]})
    return out


def _box_prior(ds: DetectionDataset) -> list[tuple[float, float, int]]:
    """(relative width, relative height, label) of every training box, for the random baseline."""
    out = []
    for i, (boxes, labels) in enumerate(ds.targets):
        h, w = ds.original_size(i)
        out += [(float(b[2] - b[0]) / max(w, 1), float(b[3] - b[1]) / max(h, 1), int(lab)) for b, lab in zip(boxes, labels)]
    return out


def _top_modules(names: list[str]) -> list[str]:
    """``layer1.0.conv1.weight`` -> ``layer1``; timm encoders keep their ``model.`` level."""
    depth = lambda n: 2 if n.startswith("model.") else 1  # noqa: E731
    return sorted({".".join(n.split(".")[: depth(n)]) for n in names})


__all__ = ["Detection"]
