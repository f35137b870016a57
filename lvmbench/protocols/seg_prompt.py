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

Box rules, the empty-ground-truth rule and coordinates: ``lvmbench.protocols.prompt_boxes``.

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

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from lvmbench.data.transforms import normalize_batch
from lvmbench.encoders.checkpoint import sha256_file
from lvmbench.errors import CheckpointError, UserError
from lvmbench.heads.sam import PromptSegModel, SamDecoder, load_sam_decoder
from lvmbench.interrupt import interruptible
from lvmbench.metrics.segmentation import per_sample_overlap, slug
from lvmbench.protocols import prompt_boxes as pb
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
from lvmbench.protocols.prompt_scores import (
    PromptSet,
    box_fill,
    score_images,
    score_volumes,
)
from lvmbench.protocols.schedule import adam, make_scheduler, optimiser_step
from lvmbench.protocols.seg_data import Prep, Prepared, prepare
from lvmbench.protocols.seg_scores import ood_summary
from lvmbench.protocols.selection import (
    BestOnValidation,
    FiniteLoss,
    require_validation,
)
from lvmbench.protocols.settings import (
    PromptEval3DSettings,
    PromptEvalSettings,
    PromptSeg3DSettings,
    PromptSegSettings,
)


def object_masks(masks: torch.Tensor, classes: list[int], grid: int) -> torch.Tensor:
    """Label maps (n, S, S) -> the prompted object (n, grid, grid) uint8, nearest-neighbour."""
    obj = torch.isin(masks, torch.tensor(classes, dtype=masks.dtype)).to(torch.uint8)
    if obj.shape[-1] != grid:
        obj = F.interpolate(obj[:, None].float(), size=(grid, grid), mode="nearest")[:, 0].to(torch.uint8)
    return obj


class PromptSeg(Protocol):
    families = ("segmentation",)
    volumes: ClassVar[bool] = False
    train_decoder: ClassVar[bool] = True
    Settings = PromptSegSettings
    version = 1

    @classmethod
    def plan_settings(cls, settings: PromptEvalSettings, options: dict[str, Any]) -> PromptEvalSettings:
        """``--decoder-weights`` fills ``decoder_weights``; the file's sha256 joins the settings
        (and so the result's identity): another decoder checkpoint is another result."""
        path = options.get("decoder_weights") or settings.decoder_weights
        if not path:
            return settings
        p = Path(path).expanduser()
        if not p.is_file():
            raise CheckpointError("decoder weights file not found", path=p, fix="pass an existing SAM-layout checkpoint to --decoder-weights (or decoder_weights in task.yaml)")
        return settings.model_copy(update={"decoder_weights": str(p.resolve()), "decoder_sha256": sha256_file(p)})

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
        prep = Prep(hp.image_size, ctx.task.preprocess.channels, hp.resize, hp.minmax, getattr(hp, "volume_norm", "med3d"))
        return prepare(reader, cases, prep, ctx.decoded_cache, native=native, volumes=self.volumes, workers=loader_workers(ctx), desc=desc, progress=ctx.progress)

    def items(self, prep: Prepared) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """(case index, slice index, image (C, P, P), labels (P, P)) of every image or slice."""
        out = []
        for n, (img, mask) in enumerate(zip(prep.images, prep.masks)):
            if self.volumes:
                out += [(n, d, img[d][None], mask[d]) for d in range(img.shape[0])]
            else:
                out.append((n, 0, img, mask))
        return out

    def prompt_set(self, ctx: RunContext, model: PromptSegModel, prep: Prepared, hp: PromptEvalSettings, role: str, rng: np.random.Generator, gen: torch.Generator) -> PromptSet:
        grid = hp.image_size // 4
        its = self.items(prep)
        obj = object_masks(torch.stack([m for *_, m in its]), list(hp.prompt_classes or []), grid) if its else torch.zeros(0, grid, grid, dtype=torch.uint8)
        boxes, fg = pb.boxes_from_masks(obj)
        keep = fg.clone()
        if hp.paper_boxes:
            # the paper: every item is prompted; an empty one with a random box. Training on slices
            # takes the slices with the object + as many drawn from the others (with replacement).
            empty = torch.nonzero(~fg).flatten().tolist()
            for i in empty:
                boxes[i] = pb.paper_random_box(grid, hp.box_jitter, rng)
            if role == "train" and self.volumes and empty and bool(fg.any()):
                keep = fg.clone()
                extra = rng.choice(empty, size=int(fg.sum()), replace=True)
            else:
                keep = torch.ones_like(fg)
                extra = np.array([], dtype=int)
            boxes[fg] = pb.jitter(boxes[fg], hp.box_jitter, grid, gen)  # drawn once, as the paper's cached dataset
            idx = torch.nonzero(keep).flatten().tolist() + [int(i) for i in extra]
        else:
            idx = torch.nonzero(keep).flatten().tolist()
        feats = self.encode(ctx, model, [its[i][2] for i in idx], hp, role)
        return PromptSet(feats, obj[idx], boxes[idx], [its[i][0] for i in idx], [its[i][1] for i in idx], prep, unprompted=int((~keep).sum()))

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
    def logits(self, ctx: RunContext, model: nn.Module, ps: PromptSet, hp: PromptEvalSettings) -> torch.Tensor:
        """Mask logits (n, M, M) on the CPU, with the set's deterministic boxes."""
        model.eval()
        grid = hp.image_size // 4
        amp = ctx.run.amp
        out = []
        for i in interruptible(range(0, len(ps.owner), hp.eval_batch_size)):
            f = ps.features[i : i + hp.eval_batch_size].to(ctx.device).float()
            b = pb.to_image(ps.boxes[i : i + hp.eval_batch_size], grid, hp.image_size).to(ctx.device)
            with autocast(ctx.device, amp):
                out.append(model(f, b)[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, grid, grid)

    def score(self, ps: PromptSet, logits: torch.Tensor, hp: PromptEvalSettings, split: str, suffix: str = "", clean: bool = False) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]:
        pred = (logits > 0).long()
        d, u = per_sample_overlap(pred, ps.targets.long(), 2) if len(pred) else (np.zeros((0, 2)), np.zeros((0, 2)))
        dice, iou = d[:, 1], u[:, 1]
        native = ps.prep.native if clean else None
        classes = list(hp.prompt_classes or [])
        return (score_volumes if self.volumes else score_images)(ps, logits, dice, iou, native, classes, hp, split, suffix)

    @classmethod
    def primary_for(cls, task) -> str:
        """The metric a result of this protocol is ranked by (also the leaderboard's for its
        reported rows). 2D: the task's own Dice (Table 2's prompt rows are per-image Dice too).
        3D: the prompt quantities, never Table 3's names: ``dice3d`` -> ``dice3d_prompt``, other
        ``dice*`` -> ``dice_prompt*``, else ``iou3d_prompt``."""
        p = task.primary_metric
        if not cls.volumes:
            return p if p.startswith("dice") or (p.startswith("iou") and not p.startswith("iou3d")) else "dice"
        if p.startswith("dice3d"):
            return "dice3d_prompt"  # the volume's slice-average Dice
        return "dice_prompt" + p.removeprefix("dice") if p.startswith("dice") else "iou3d_prompt"

    def select_key(self, hp: PromptEvalSettings) -> str:
        return str(getattr(hp, "select_metric", None) or ("iou3d_prompt" if self.volumes else "dice"))

    # --- training ----------------------------------------------------------------------------
    def train(self, ctx: RunContext, model: PromptSegModel, train: PromptSet, val: PromptSet, hp: PromptSegSettings, gen: torch.Generator) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, float]]:
        grid = hp.image_size // 4
        params = [p for p in model.parameters() if p.requires_grad]
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
                boxes = train.boxes[idx] if hp.paper_boxes else pb.jitter(train.boxes[idx], hp.box_jitter, grid, gen)
                f = train.features[idx].to(ctx.device).float()
                y = train.targets[idx][:, None].to(ctx.device).float()
                with autocast(ctx.device, amp):
                    logits = model(f, pb.to_image(boxes, grid, hp.image_size).to(ctx.device))
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
        sets = {s: self.prompt_set(ctx, model, p, hp, s, rng, gen) for s, p in preps.items()}
        ood_sets = [(o, self.prompt_set(ctx, model, p, hp, "test", rng, gen)) for o, p in oods]
        t_encode = time.perf_counter() - t0

        chosen: dict[str, Any] = {"rule": "zero-shot: the decoder as loaded"}
        history: list[dict[str, float]] = []
        train_t: dict[str, float] = {}
        if self.train_decoder:
            if not len(sets["train"].owner):
                raise UserError(f"task '{ctx.task.id}': no training image shows the prompted object (classes {hp.prompt_classes})", fix="check prompt_classes and the task's masks")
            chosen, history, train_t = self.train(ctx, model, sets["train"], sets["val"], hp, gen)  # type: ignore[arg-type]

        test = sets["test"]
        test_logits = self.logits(ctx, model, test, hp)
        metrics, per_case, undefined = self.score(test, test_logits, hp, "test", clean=True)
        counts = {s: len(cs) for s, cs in splits.items()}
        counts.update({f"{s}_prompted": len(ps.owner) for s, ps in sets.items()})
        counts.update({f"{s}_unprompted": ps.unprompted for s, ps in sets.items()})
        null_metrics = self.score(test, torch.full_like(test_logits, -1.0), hp, "test")[0]
        fill_metrics = self.score(test, box_fill(test, hp), hp, "test")[0]
        for o, ps in ood_sets:
            lg = self.logits(ctx, model, ps, hp)
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
        flags = ["paper-boxes"] if hp.paper_boxes else []
        if not hp.decoder_weights and not self.train_decoder:
            flags.append("random-decoder")
        if chosen.get("validation_undefined"):
            flags.append("validation-undefined")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if self.train_decoder else 0
        used = {"selected": chosen, "image_size": hp.image_size, "mask_size": hp.image_size // 4, "load": load,
                "trainable_parameters": trainable, "amp": ctx.run.amp}
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts=counts,
            extra={
                "val_history": history,
                "hd95_undefined": undefined,
                "ood_sets": names,
                "baseline": {"metric": primary, "value": float(null_metrics.get(primary, float("nan"))), "predictor": "all background"},
                "box_fill": {"metric": primary, "value": float(fill_metrics.get(primary, float("nan"))), "predictor": "the prompt box filled (no encoder, no decoder)"},
                "conventions": clean_conventions(hp, self.volumes),
            },
            flags=flags,
            timings={"encode_s": t_encode, **train_t, "total_s": time.perf_counter() - t0},
            primary_metric=primary,
        )

@PROTOCOLS.register("seg2d-prompt")
class Seg2DPrompt(PromptSeg):
    name = "seg2d-prompt"
    Settings = PromptSegSettings


@PROTOCOLS.register("seg3d-prompt")
class Seg3DPrompt(PromptSeg):
    name = "seg3d-prompt"
    volumes = True
    Settings = PromptSeg3DSettings


@PROTOCOLS.register("seg2d-prompt-zeroshot")
class Seg2DPromptZeroShot(PromptSeg):
    name = "seg2d-prompt-zeroshot"
    train_decoder = False
    Settings = PromptEvalSettings


@PROTOCOLS.register("seg3d-prompt-zeroshot")
class Seg3DPromptZeroShot(PromptSeg):
    name = "seg3d-prompt-zeroshot"
    volumes = True
    train_decoder = False
    Settings = PromptEval3DSettings
