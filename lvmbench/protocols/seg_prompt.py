"""Box-prompted segmentation with SAM's prompt encoder and mask decoder over any encoder.

LVM-Med's prompt recipe (reference §1.3-1.4, ``segmentation_2d/LVMMed_SAM_2d.py``): the image is
resized to 1024 (nearest, per-image min-max, SAM's mean/std), the mask to 256; the prompt is the
ground-truth box; the encoder and the prompt encoder are frozen and only the mask decoder trains,
with MONAI's ``DiceCELoss(sigmoid=True, squared_pred=True)``, Adam (AMSGrad, no weight decay),
gradient clipping at 1 and the best validation Dice selecting the checkpoint. Because nothing
before the decoder trains and images are not augmented, each image is encoded once and the
features are kept in memory; epochs then only run the neck and the decoder.

Protocols: ``seg2d-prompt`` and ``seg3d-prompt`` (slice-wise: every slice that shows the object
is one prompted image) train the decoder; ``seg2d-prompt-zeroshot`` / ``seg3d-prompt-zeroshot``
score the decoder as loaded (the paper's "SAM zero-shot" rows: ``--encoder sam-vitb --weights
sam_vit_b_01ec64.pth --decoder-weights sam_vit_b_01ec64.pth``).

Prompts: the task's ``prompt:`` block (``lvmbench.data.prompts.rules``: presets ``lvmmed``,
``medsam``, ``sam-med2d``, ``tight``), drawn once per (task, rule, seed) and shared by every encoder
through the task's prompt file (``lvmbench.protocols.prompt_sets``); boxes and/or points, and
``iterations`` correction clicks at evaluation (``lvmbench.protocols.prompt_iterate``).

Baseline (``extra.baseline``): filling the prompt box itself, with the same boxes and scorer
(``box_fill``); a model that does not beat it has learnt nothing the box did not say.

Metrics (object = the union of ``prompt_classes``, all foreground classes by default):
- 2D ``dice``/``iou``: per prompted image at the mask grid (image_size / 4; 256 in the paper),
  averaged: Table 2's prompt rows. ``dice_clean``/``iou_clean``/``hd95_clean``: logits upsampled
  to the native size.
- 3D ``iou3d_prompt``/``dice3d_prompt``: per volume, the per-slice IoU (Dice) of its prompted slices
  averaged, then averaged over volumes: what LVM-Med's ``eval_iou`` computes for Table 11 (all
  foreground labels as one). NOT Table 3's ``iou3d`` (volumetric, scored class only).
  ``dice_prompt``: per-slice Dice over all prompted slices (Table 4's prompt rows, with
  ``_<site>`` and ``dice_prompt_avg`` for out-of-distribution sets). ``*_clean``: each volume's
  prediction (unprompted slices empty) against its native label volume.
"""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn
from tqdm.auto import tqdm

from lvmbench.data.prompts.boxes import redraw_boxes
from lvmbench.data.prompts.draw import object_at
from lvmbench.data.prompts.items import ItemPrompt
from lvmbench.data.transforms import normalize_batch
from lvmbench.errors import DataError, UserError
from lvmbench.heads.sam import PromptSegModel, SamDecoder, load_sam_decoder
from lvmbench.interrupt import interruptible
from lvmbench.metrics.segmentation import per_sample_overlap, slug
from lvmbench.protocols import declared
from lvmbench.protocols.base import (
    PROTOCOLS,
    Protocol,
    ProtocolOutput,
    RunContext,
    seed_everything,
)
from lvmbench.protocols.clean_scoring import clean_conventions
from lvmbench.protocols.epoch_log import epoch_line
from lvmbench.protocols.features import autocast, loader_workers
from lvmbench.protocols.prompt_iterate import iterate, training_clicks
from lvmbench.protocols.prompt_scores import (
    PromptSet,
    box_fill,
    metric_definition,
    score_images,
    score_volumes,
)
from lvmbench.protocols.prompt_sets import prep_items, resolve_prompts, stack_prompts
from lvmbench.protocols.schedule import adam, make_scheduler, optimiser_step
from lvmbench.protocols.seg_data import Prep, Prepared, prepare
from lvmbench.protocols.seg_scores import ood_summary
from lvmbench.protocols.selection import (
    BestOnValidation,
    FiniteLoss,
    require_validation,
)
from lvmbench.protocols.settings import (
    PromptEvalSettings,
    PromptSegSettings,
)


def prompt_prep(hp: PromptEvalSettings, channels: int) -> Prep:
    """How the prompt protocols decode and resize (also ``lvmbench data prompts``: same masks)."""
    return Prep(hp.image_size, channels, hp.resize, hp.minmax, getattr(hp, "volume_norm", "med3d"))


class PromptSeg(Protocol):
    """The shared implementation; each registered protocol below takes its declaration (settings,
    version, volumes, ``primary_for``) from ``declared``."""

    train_decoder: ClassVar[bool] = True

    # --- model -----------------------------------------------------------------------------
    def build(self, ctx: RunContext, hp: PromptEvalSettings) -> tuple[PromptSegModel, dict[str, Any]]:
        decoder = SamDecoder(hp.image_size, hp.decoder_dim, hp.decoder_depth, hp.decoder_mlp_dim, hp.decoder_heads)
        report: dict[str, Any] = {"decoder": "random init"}
        if hp.decoder_weights:
            report = {"decoder": load_sam_decoder(decoder, hp.decoder_weights)}
        model = PromptSegModel(ctx.make_encoder(), decoder)
        model.decoder.prompt_encoder.requires_grad_(bool(getattr(hp, "train_prompt_encoder", False)))
        report.update(source=model.kind, neck="the encoder's own (frozen)" if model.own_neck else "new (trained)")
        return model.to(ctx.device), report

    # --- data ------------------------------------------------------------------------------
    def prepared(self, ctx: RunContext, reader, cases, hp: PromptEvalSettings, native: bool, desc: str) -> Prepared:
        prep = prompt_prep(hp, ctx.task.preprocess.channels)
        return prepare(reader, cases, prep, ctx.decoded_cache, native=native, volumes=self.volumes, workers=loader_workers(ctx), desc=desc, progress=ctx.progress)

    def prompt_set(self, ctx: RunContext, model: PromptSegModel, prep: Prepared, hp: PromptEvalSettings, role: str, prompts: list[ItemPrompt], rng: np.random.Generator) -> PromptSet:
        """The prompted items of one part with their cached features. Under ``empty: random_box``
        slice-wise training takes, as LVM-Med's ``SegmentationDataset_train``, every slice that
        shows the object plus as many drawn (with replacement) from the others."""
        grid = hp.image_size // 4
        its = prep_items(prep, self.volumes)
        obj = object_at(torch.stack([m for *_, m in its]), list(hp.prompt_classes or []), grid) if its else torch.zeros(0, grid, grid, dtype=torch.uint8)
        prompted = np.array([p.prompted for p in prompts], dtype=bool)
        empty = np.array([p.empty for p in prompts], dtype=bool)
        idx = np.flatnonzero(prompted).tolist()
        if role == "train" and self.volumes and hp.prompt.empty == "random_box":
            fg, others = np.flatnonzero(prompted & ~empty), np.flatnonzero(prompted & empty)
            extra = rng.choice(others, size=len(fg), replace=True) if len(others) and len(fg) else np.array([], dtype=int)
            idx = fg.tolist() + [int(i) for i in extra]
        k = len(prompts[idx[0]].points) if idx else hp.prompt.points
        odd = next((i for i in idx if len(prompts[i].points) != k), None)
        if odd is not None:
            raise DataError(f"prompts of part '{role}' carry different numbers of points ({k} and {len(prompts[odd].points)}, case '{prompts[odd].case}')", fix="give every image the same number of points")
        boxes, pts, labels, emp = stack_prompts(prompts, idx, k)
        feats = self.encode(ctx, model, [its[i][2] for i in idx], hp, role)
        return PromptSet(feats, obj[idx], boxes, [its[i][0] for i in idx], [its[i][1] for i in idx], prep, unprompted=int((~prompted).sum()),
                         points=pts, labels=labels, empty=emp, frame=hp.prompt.resolution)

    @torch.no_grad()
    def encode(self, ctx: RunContext, model: PromptSegModel, images: list[torch.Tensor], hp: PromptEvalSettings, role: str) -> torch.Tensor:
        norm = ctx.input_norm(model.encoder.input_spec)
        amp = ctx.run.amp
        store = torch.float16 if ctx.device.type == "cuda" else torch.float32  # CPU: exact; GPU: half the memory
        out = []
        bs = hp.eval_batch_size
        for i in interruptible(tqdm(range(0, len(images), bs), desc=f"encode:{role}", disable=not ctx.progress, leave=False)):
            x = torch.stack(images[i : i + bs]).to(ctx.device)
            x = normalize_batch(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, norm)
            with autocast(ctx.device, amp):
                f = model.encode(x)
            out.append(f.to("cpu", store))
        return torch.cat(out) if out else torch.zeros(0)

    # --- prediction and scores ----------------------------------------------------------------
    @torch.no_grad()
    def logits(self, ctx: RunContext, model: nn.Module, ps: PromptSet, hp: PromptEvalSettings, points: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mask logits (n, M, M) on the CPU from the set's prompts (``points``/``labels``: these
        points instead of the set's own, e.g. with correction clicks)."""
        model.eval()
        grid = hp.image_size // 4
        amp = ctx.run.amp
        pts, labs = (ps.points, ps.labels) if points is None else (points, labels)
        out = []
        for i in interruptible(range(0, len(ps.owner), hp.eval_batch_size)):
            sl = slice(i, i + hp.eval_batch_size)
            f = ps.features[sl].to(ctx.device).float()
            with autocast(ctx.device, amp):
                out.append(model(f, *self.prompt_inputs(ps, hp, sl, pts, labs, None, ctx.device))[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, grid, grid)

    @staticmethod
    def prompt_inputs(ps: PromptSet, hp: PromptEvalSettings, sl, pts, labs, boxes, device) -> tuple:
        """(boxes, points, labels) of items ``sl`` in image pixels, as SAM's prompt encoder reads
        them (the rule's grid x image_size / frame: LVM-Med's x 1024 / 256)."""
        scale = hp.image_size / (ps.frame or hp.image_size // 4)
        b = ps.boxes[sl] if boxes is None and ps.boxes is not None else boxes
        return (
            None if b is None else (b * scale).to(device),
            None if pts is None else (pts[sl] * scale).to(device),
            None if labs is None else labs[sl].to(device),
        )

    def score(self, ps: PromptSet, logits: torch.Tensor, hp: PromptEvalSettings, split: str, suffix: str = "", clean: bool = False) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]:
        pred = (logits > 0).long()
        d, u = per_sample_overlap(pred, ps.targets.long(), 2) if len(pred) else (np.zeros((0, 2)), np.zeros((0, 2)))
        dice, iou = d[:, 1], u[:, 1]
        native = ps.prep.native if clean else None
        classes = list(hp.prompt_classes or [])
        return (score_volumes if self.volumes else score_images)(ps, logits, dice, iou, native, classes, hp, split, suffix)

    def select_key(self, hp: PromptEvalSettings) -> str:
        return str(getattr(hp, "select_metric", None) or ("iou3d_prompt" if self.volumes else "dice"))

    # --- training ----------------------------------------------------------------------------
    def train(self, ctx: RunContext, model: PromptSegModel, train: PromptSet, val: PromptSet, hp: PromptSegSettings, gen: torch.Generator) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, float]]:
        params = [p for p in model.parameters() if p.requires_grad]
        rule = hp.prompt
        redraw = rule.redrawn("train") and train.boxes is not None
        kind, px = rule.split_jitter("train")
        n = len(train.owner)
        bs = min(hp.batch_size, max(1, n))
        steps = max(1, -(-n // bs))
        opt = adam(params, ctx.device, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay, amsgrad=hp.amsgrad)
        sched = make_scheduler(opt, hp.schedule, hp.epochs, steps)
        loss_fn = DiceCELoss(sigmoid=True, squared_pred=True, reduction="mean")
        guard, selector = FiniteLoss("prompt segmentation"), BestOnValidation()
        amp = ctx.run.amp
        key = self.select_key(hp)
        history: list[dict[str, float]] = []
        t_train = t_val = 0.0
        for epoch in range(1, hp.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            total = 0.0
            perm = torch.randperm(n, generator=gen)
            for i in tqdm(range(0, n, bs), desc=f"{ctx.unit.protocol} e{epoch}", disable=not ctx.progress, leave=False):
                idx = perm[i : i + bs]
                boxes = None
                if redraw:  # redrawn at every use around the base box; random boxes of empty items stay
                    boxes = train.boxes[idx].clone()
                    keep = ~train.empty[idx]
                    boxes[keep] = redraw_boxes(boxes[keep], kind, px, rule.resolution, gen)
                pts, labs = train.points, train.labels
                if rule.iterations:  # teach the decoder what a click means (lvmbench.protocols.prompt_iterate)
                    cp, cl = training_clicks(train.targets[idx], rule.iterations, 1.0 / train.grid_scale(), gen)
                    base_p = pts[idx] if pts is not None else torch.zeros(len(idx), 0, 2)
                    base_l = labs[idx] if labs is not None else torch.zeros(len(idx), 0, dtype=torch.int64)
                    pts, labs, sel = torch.cat([base_p, cp], 1), torch.cat([base_l, cl], 1), slice(None)
                else:
                    sel = idx
                f = train.features[idx].to(ctx.device).float()
                y = train.targets[idx][:, None].to(ctx.device).float()
                b, p, lab = self.prompt_inputs(train, hp, idx, None, None, boxes, ctx.device)
                _, p, lab = self.prompt_inputs(train, hp, sel, pts, labs, None, ctx.device) if pts is not None else (None, None, None)
                with autocast(ctx.device, amp):
                    logits = model(f, b, p, lab)
                loss = loss_fn(logits.float(), y)
                guard.check(loss, epoch)
                optimiser_step(loss, opt, sched, params, hp.grad_clip)
                total += float(loss.detach())
            guard.end_epoch(epoch)
            t1 = time.perf_counter()
            t_train += t1 - t0
            val_score = self.score(val, self.logits(ctx, model, val, hp), hp, "val")[0].get(key, float("nan"))
            t_val += time.perf_counter() - t1
            history.append({"epoch": epoch, "loss": total / steps, "val": val_score})
            epoch_line(ctx, epoch, hp.epochs, t0, loss=total / steps, **{f"val_{key}": val_score})
            selector.offer(val_score, lambda: {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, {"epoch": epoch, "val_primary": val_score})
        best, chosen = selector.result("prompt segmentation")
        model.load_state_dict(best)
        return chosen, history, {"train_loop_s": t_train, "val_s": t_val, "train_steps": float(steps * hp.epochs)}

    # --- the unit ---------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp: PromptEvalSettings = ctx.settings  # type: ignore[assignment]
        rule = hp.prompt
        if self.train_decoder:
            require_validation(ctx, ctx.data.split.val)
        gen = seed_everything(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        model, load = self.build(ctx, hp)
        t0 = time.perf_counter()
        splits = {"train": ctx.train_cases(), "val": ctx.data.split.val, "test": ctx.data.split.test} if self.train_decoder else {"test": ctx.data.split.test}
        verb = "slice" if self.volumes else "decode"
        preps = {s: self.prepared(ctx, ctx.data.reader, cs, hp, native=s == "test", desc=f"{verb}:{s}") for s, cs in splits.items() if cs}
        oods = [(o.spec, self.prepared(ctx, o.reader, o.cases, hp, native=True, desc=f"{verb}:{o.name}")) for o in ctx.data.ood]
        parts = {**preps, **{f"ood:{o.name}": p for o, p in oods}}
        prompts, pinfo = resolve_prompts(ctx.unit.suite, ctx.task.id, ctx.seed, hp, parts, self.volumes, log=lambda line: tqdm.write(line, file=sys.stderr))
        sets = {s: self.prompt_set(ctx, model, p, hp, s, prompts[s], rng) for s, p in preps.items()}
        ood_sets = [(o, self.prompt_set(ctx, model, p, hp, f"ood:{o.name}", prompts[f"ood:{o.name}"], rng)) for o, p in oods]
        t_encode = time.perf_counter() - t0

        chosen: dict[str, Any] = {"rule": "zero-shot: the decoder as loaded"}
        history: list[dict[str, float]] = []
        train_t: dict[str, float] = {}
        if self.train_decoder:
            if not len(sets["train"].owner):
                raise UserError(f"task '{ctx.task.id}': no training image shows the prompted object (classes {hp.prompt_classes})", fix="check prompt_classes and the task's masks")
            chosen, history, train_t = self.train(ctx, model, sets["train"], sets["val"], hp, gen)  # type: ignore[arg-type]

        def predict(ps: PromptSet):
            return lambda pts, labs: self.logits(ctx, model, ps, hp, pts, labs)

        test = sets["test"]
        test_logits, curve = iterate(predict(test), test, rule, ctx.seed)
        metrics, per_case, undefined = self.score(test, test_logits, hp, "test", clean=True)
        counts = {s: len(cs) for s, cs in splits.items()}
        counts.update({f"{s}_prompted": len(ps.owner) for s, ps in sets.items()})
        counts.update({f"{s}_unprompted": ps.unprompted for s, ps in sets.items()})
        null_metrics = self.score(test, torch.full_like(test_logits, -1.0), hp, "test")[0]
        fill_metrics = self.score(test, box_fill(test, hp), hp, "test")[0]
        for o, ps in ood_sets:
            lg, _ = iterate(predict(ps), ps, rule, ctx.seed)
            sfx = f"_{slug(o.name)}"
            m, recs, und = self.score(ps, lg, hp, f"ood:{o.name}", sfx, clean=True)
            metrics.update(m)
            per_case += recs
            undefined.update(und)
            null_metrics.update(self.score(ps, torch.full_like(lg, -1.0), hp, "test", sfx)[0])
            fill_metrics.update(self.score(ps, box_fill(ps, hp), hp, "test", sfx)[0])
            counts[f"ood:{o.name}"] = len(ps.prep.cases)
            counts[f"ood:{o.name}_prompted"] = len(ps.owner)
        keys = ("dice_prompt", "iou3d_prompt") if self.volumes else ("dice",)
        names = [o.name for o, _ in ood_sets]
        metrics.update(ood_summary(metrics, names, keys))
        null_metrics.update(ood_summary(null_metrics, names, keys))
        fill_metrics.update(ood_summary(fill_metrics, names, keys))
        primary = self.primary_for(ctx.task)
        flags = ["imported-prompts"] if pinfo.get("prompt_origin") == "imported" else []
        if not hp.decoder_weights and not self.train_decoder:
            flags.append("random-decoder")
        if chosen.get("validation_undefined"):
            flags.append("validation-undefined")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if self.train_decoder else 0
        grid = hp.image_size // 4
        used = {"selected": chosen, "image_size": hp.image_size, "mask_size": grid, "load": load,
                "trainable_parameters": trainable, "amp": ctx.run.amp, **pinfo}
        null = {"metric": primary, "value": float(null_metrics.get(primary, float("nan"))), "predictor": "all background"}
        fill = {"metric": primary, "value": float(fill_metrics.get(primary, float("nan"))), "predictor": "the prompt box filled (the same boxes and scorer; no encoder, no decoder)"}
        extra = {
            "val_history": history,
            "hd95_undefined": undefined,
            "ood_sets": names,
            # what a useless model cannot beat: the box it was given (all background when the prompts have no box)
            "baseline": fill if test.boxes is not None else {**null, "predictor": "all background (the prompts have no box to fill)"},
            "box_fill": fill,
            "all_background": null,
            # flat str -> str (the leaderboard pairs a result with a reported row only when these agree)
            "conventions": {**clean_conventions(hp, self.volumes), "prompt_preset": rule.label() + ("+imported" if pinfo.get("prompt_origin") == "imported" else ""), "empty_policy": rule.empty_label(),
                            "metric_definition": metric_definition(primary, grid, self.volumes) + (f",after-{rule.iterations}-clicks" if rule.iterations else "")},
        }
        if rule.iterations:
            extra["iteration_dice"] = curve
            extra["iteration_metric"] = "mean Dice per prompted " + ("slice" if self.volumes else "image") + f" at {grid} px after 0..{rule.iterations} clicks (test)"
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts=counts,
            extra=extra,
            flags=flags,
            timings={"encode_s": t_encode, **train_t, "total_s": time.perf_counter() - t0},
            primary_metric=primary,
        )

@PROTOCOLS.register("seg2d-prompt")
class Seg2DPrompt(declared.Seg2DPrompt, PromptSeg):
    pass


@PROTOCOLS.register("seg3d-prompt")
class Seg3DPrompt(declared.Seg3DPrompt, PromptSeg):
    pass


@PROTOCOLS.register("seg2d-prompt-zeroshot")
class Seg2DPromptZeroShot(declared.Seg2DPromptZeroShot, PromptSeg):
    train_decoder = False


@PROTOCOLS.register("seg3d-prompt-zeroshot")
class Seg3DPromptZeroShot(declared.Seg3DPromptZeroShot, PromptSeg):
    train_decoder = False
