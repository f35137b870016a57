"""Pieces shared by the 2D and slice-wise 3D segmentation protocols.

Training follows LVM-Med's R50 U-Net code (reference §1.3-1.4): Adam (betas 0.9/0.999, no weight
decay), loss = cross-entropy + (1 - soft Dice averaged over all classes, pooled over the batch,
eps 1e-6) — MONAI's ``DiceCELoss(batch=True)`` computes exactly that — gradient-norm clipping at 1,
validation after every epoch, the best validation score selects the checkpoint, the test split is
scored once with it. Out-of-distribution sets (``task.ood``) are scored with the same checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from lvmbench.data.cases import Case, DatasetReader, make_reader
from lvmbench.data.transforms import normalize_batch
from lvmbench.heads.unet import UNet
from lvmbench.metrics.segmentation import clean_overlap, hd95, nanmean, slug
from lvmbench.metrics.surface import nsd_per_class
from lvmbench.protocols.clean_scoring import clean_conventions
from lvmbench.protocols.epoch_log import epoch_line
from lvmbench.protocols.resume import EpochResume
from lvmbench.protocols.base import Protocol, ProtocolOutput, RunContext, seed_everything
from lvmbench.protocols.features import autocast, loader_workers, model_layout
from lvmbench.interrupt import interruptible
from lvmbench.protocols.schedule import adam, make_scheduler, optimiser_step
from lvmbench.protocols.selection import BestOnValidation, FiniteLoss, require_validation
from lvmbench.protocols.seg_data import Prep, Prepared, prepare
from lvmbench.protocols.settings import SegSettings
from lvmbench.spec import OODSet


def build_model(ctx: RunContext) -> UNet:
    pre = ctx.task.preprocess
    hp: SegSettings = ctx.settings  # type: ignore[assignment]
    model = UNet(ctx.make_encoder(), ctx.task.num_classes, in_channels=pre.channels, decoder_channels=hp.decoder_channels)
    model = model.to(ctx.device)
    if ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if ctx.options.get("compile", False):
        model.compile()  # in place: state_dict keys stay those of the plain model
    return model


def runtime_hparams(ctx: RunContext) -> dict[str, bool]:
    """The speed options a result records beside the task's hyperparameters."""
    return {"amp": bool(ctx.options.get("amp", False)), "compile": bool(ctx.options.get("compile", False))}


def on_device(ctx: RunContext, *tensors: torch.Tensor, limit_bytes: int = 2 << 30) -> tuple[torch.Tensor, ...]:
    """The in-memory uint8 training arrays moved to the GPU once when they fit in ``limit_bytes``:
    a batch is then an index on the device, not a synchronous copy from pageable host memory."""
    if ctx.device.type != "cuda" or sum(t.numel() * t.element_size() for t in tensors) > limit_bytes:
        return tensors
    return tuple(t.to(ctx.device) for t in tensors)


def make_prep(ctx: RunContext, hp: SegSettings) -> Prep:
    pre = ctx.task.preprocess
    # 2D protocols have no volume_norm: their images are never volumes
    return Prep(pre.size, pre.channels, pre.resize, hp.minmax, getattr(hp, "volume_norm", "med3d"))


def prepare_cases(ctx: RunContext, reader: DatasetReader, cases: list[Case], hp: SegSettings, *, native: bool, volumes: bool, desc: str) -> Prepared:
    return prepare(
        reader, cases, make_prep(ctx, hp), ctx.decoded_cache, native=native, volumes=volumes,
        workers=loader_workers(ctx), desc=desc, progress=ctx.progress,
    )


def model_input(ctx: RunContext, model: UNet, x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, S, S) -> the float input the encoder expects (paper: raw 0-255)."""
    x = x.to(ctx.device, non_blocking=True)
    if x.shape[1] != model.in_channels:
        x = x.expand(-1, model.in_channels, -1, -1)
    return model_layout(normalize_batch(x, ctx.input_norm(model.encoder.input_spec)))


def dice_ce_loss() -> nn.Module:
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-6, smooth_dr=1e-6)


def train_model(
    ctx: RunContext,
    model: UNet,
    hp: SegSettings,
    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    n_batches: int,
    validate: Callable[[], float],
    gen: torch.Generator | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, float]]:
    """Train for ``hp.epochs``; keep the state with the best ``validate()``; load it back.
    A unit stopped half-way continues after its last saved epoch (``lvmbench.protocols.resume``;
    ``gen``: the generator ``batches`` draws from, saved and restored with it).

    Returns the selection record, the per-epoch history and timings: ``data_wait_s`` (waiting for
    batches), ``train_loop_s`` (the training steps, data waits included, validation excluded),
    ``val_s``, ``train_steps`` and ``train_images`` (what ``benchmarks/train_throughput.py`` reads).
    """
    opt = adam(model.parameters(), ctx.device, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)
    sched = make_scheduler(opt, hp.schedule, hp.epochs, n_batches)
    guard = FiniteLoss("segmentation")
    loss_fn = dice_ce_loss()
    amp = bool(ctx.options.get("amp", False))
    selector = BestOnValidation()
    history: list[dict[str, float]] = []
    wait = loop = val_time = 0.0
    images = all_steps = 0
    resume = EpochResume(ctx, hp, runtime_hparams(ctx))
    first = 1
    saved = resume.load()
    if saved is not None:
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}  # to undo a failed resume
        try:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            selector.best, selector.state, selector.info, selector.undefined = float(saved["best"]), saved["best_state"], dict(saved["best_info"]), int(saved["undefined"])
            history = list(saved["history"])
            wait, loop, val_time, images, all_steps = saved["timings"]
            if gen is not None:
                gen.set_state(saved["gen"])
            torch.set_rng_state(saved["rng"])
            first = int(saved["epoch"]) + 1
        except Exception as e:  # noqa: BLE001 - saved by other code: start over rather than fail the unit
            tqdm.write(f"{ctx.unit.protocol}: ignoring resume checkpoint {resume.path} ({e.__class__.__name__}: {e}); starting at epoch 1")
            model.load_state_dict(initial)
            opt = adam(model.parameters(), ctx.device, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)
            sched = make_scheduler(opt, hp.schedule, hp.epochs, n_batches)
            selector, history = BestOnValidation(), []
            wait = loop = val_time = 0.0
            images = all_steps = 0
            resume.clear()
    for epoch in range(first, hp.epochs + 1):
        model.train()
        # the epoch's loss is summed on the device (float64, as Python floats would) so that no
        # step waits for the GPU to report its loss
        total, steps = torch.zeros((), dtype=torch.float64, device=ctx.device), 0
        t_loop = t_wait = time.perf_counter()
        for x, y in tqdm(batches(epoch), desc=f"{ctx.unit.protocol} e{epoch}", total=n_batches, disable=not ctx.progress, leave=False):
            wait += time.perf_counter() - t_wait
            inp = model_input(ctx, model, x)
            target = y.to(ctx.device, non_blocking=True).long().unsqueeze(1)
            with autocast(ctx.device, amp):
                logits = model(inp)
            loss = loss_fn(logits.float(), target)
            guard.check(loss, epoch)
            optimiser_step(loss, opt, sched, model.parameters(), hp.grad_clip)
            total += loss.detach()
            steps += 1
            images += len(x)
            t_wait = time.perf_counter()
        guard.end_epoch(epoch)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)  # the loop's time includes its queued GPU work
        t_val = time.perf_counter()
        loop += t_val - t_loop
        all_steps += steps
        val = float(validate())
        val_time += time.perf_counter() - t_val
        history.append({"epoch": epoch, "loss": float(total) / max(1, steps), "val": val})
        epoch_line(ctx, epoch, hp.epochs, t_loop, loss=history[-1]["loss"], **{f"val_{hp.select_metric}": val})
        # the earliest epoch wins ties; a NaN score never wins
        selector.offer(val, lambda: {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, {"epoch": epoch, "val_primary": val})
        if epoch < hp.epochs and resume.due():
            resume.save({
                "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                "best": selector.best, "best_state": selector.state, "best_info": selector.info, "undefined": selector.undefined,
                "timings": [wait, loop, val_time, images, all_steps], "gen": gen.get_state() if gen is not None else torch.empty(0), "rng": torch.get_rng_state(),
            })
    best_state, chosen = selector.result("segmentation")
    model.load_state_dict(best_state)
    timings = {"data_wait_s": wait, "train_loop_s": loop, "val_s": val_time, "train_steps": float(all_steps), "train_images": float(images)}
    return chosen, history, timings


@torch.inference_mode()
def predict_logits(ctx: RunContext, model: UNet, images: torch.Tensor, batch_size: int) -> Iterable[tuple[int, torch.Tensor]]:
    """Yield (start index, float logits (B, K, S, S) on the device) over uint8 images (N, C, S, S)."""
    model.eval()
    amp = bool(ctx.options.get("amp", False))
    for i in interruptible(range(0, len(images), batch_size)):
        with autocast(ctx.device, amp):
            out = model(model_input(ctx, model, images[i : i + batch_size]))
        yield i, out.float()


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


def data_root_of(ctx: RunContext) -> Path:
    """The data root the task's own folder was resolved against."""
    root = ctx.data.root
    for _ in Path(ctx.task.data.dir).parts:
        root = root.parent
    return root


def ood_readers(ctx: RunContext) -> list[tuple[OODSet, DatasetReader, list[Case]]]:
    """Reader and cases of every out-of-distribution set: all of its cases are test cases."""
    out = []
    base = data_root_of(ctx)
    for o in ctx.task.ood:
        same = o.reader is None or o.reader == ctx.task.data.reader
        options = {**(ctx.task.data.options if same else {}), **o.options}
        if o.sites:
            options["sites"] = list(o.sites)
        options.setdefault("classes", list(ctx.task.classes))
        reader = make_reader(o.reader or ctx.task.data.reader, base / (o.dir or ctx.task.data.dir), options)
        out.append((o, reader, reader.cases()))
    return out


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


def shuffled_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator, hflip: bool = False) -> tuple[Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]], int]:
    """A fresh permutation per epoch over in-memory arrays; the last partial batch is dropped
    (BatchNorm on one image) unless it is the only one. ``hflip``: each image and its mask are
    flipped left-right together with probability 1/2. Returns the batch factory and its length."""
    n = len(x)
    bs = min(batch_size, n)
    stop = (n // bs) * bs if n > bs else n

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, stop, bs):
            idx = perm[i : i + bs]
            xb, yb = x[idx], y[idx]
            if hflip:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(xb.device)
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                yb = torch.where(flip.view(-1, 1, 1), yb.flip(-1), yb)
            yield xb, yb

    return batches, max(1, stop // bs)


Scores = tuple[dict[str, float], list[dict[str, Any]], dict[str, int]]


class AllBackground(nn.Module):
    """The baseline every segmentation result states: predicts background everywhere (through the
    same scoring code, so the paper's empty-empty = 1 rule counts for it too)."""

    def __init__(self, model: UNet, num_classes: int):
        super().__init__()
        self.in_channels, self.encoder, self.k = model.in_channels, model.encoder, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.k, *x.shape[-2:], device=x.device)
        logits[:, 0] = 1.0
        return logits


class SegProtocol(Protocol):
    """Train a U-Net on in-memory arrays, select on validation, score test and OOD sets once.

    Subclasses say how the data is sliced (``volumes``), which arrays are trained on, how a split is
    scored and which metric selects the checkpoint.
    """

    families = ("segmentation",)
    volumes: ClassVar[bool] = False
    ood_keys: ClassVar[tuple[str, ...]] = ("dice",)

    def training_arrays(self, ctx: RunContext, hp: SegSettings, train: Prepared) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        """uint8 images (N, C, S, S), labels (N, S, S) and counts for the result."""
        raise NotImplementedError

    def evaluate(self, ctx: RunContext, model: UNet, prep: Prepared, hp: SegSettings, split: str, suffix: str = "", validation: bool = False) -> Scores:
        raise NotImplementedError

    def validation_score(self, ctx: RunContext, model: UNet, prep: Prepared, hp: SegSettings) -> float:
        """The selection metric on the validation split (no HD95, no native-size scores)."""
        return self.evaluate(ctx, model, prep, hp.model_copy(update={"hd95": False}), "val", validation=True)[0][str(hp.select_metric)]

    def baseline(self, ctx: RunContext, model: UNet, test: Prepared, oods: list, hp: SegSettings) -> dict[str, Any]:
        """The task's primary metric of an all-background prediction on the same test (and OOD) sets."""
        null, quick = AllBackground(model, ctx.task.num_classes), hp.model_copy(update={"hd95": False})
        metrics = self.evaluate(ctx, null, test, quick, "test")[0]
        for o, prep in oods:
            metrics.update(self.evaluate(ctx, null, prep, quick, f"ood:{o.name}", f"_{slug(o.name)}")[0])
        metrics.update(ood_summary(metrics, [o.name for o, _ in oods], self.ood_keys))
        primary = ctx.task.primary_metric
        return {"metric": primary, "value": float(metrics.get(primary, float("nan"))), "predictor": "all background"}

    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp: SegSettings = ctx.settings  # type: ignore[assignment]
        require_validation(ctx, ctx.data.split.val)
        gen = seed_everything(ctx.seed)
        # Built first, so its initialisation does not depend on how many loaders ran before it.
        model = build_model(ctx)
        t0 = time.perf_counter()
        splits = {"train": ctx.train_cases(), "val": ctx.data.split.val, "test": ctx.data.split.test}
        verb = "slice" if self.volumes else "decode"
        data = {s: prepare_cases(ctx, ctx.data.reader, cs, hp, native=s == "test", volumes=self.volumes, desc=f"{verb}:{s}") for s, cs in splits.items() if cs}
        oods = [(o, prepare_cases(ctx, r, cs, hp, native=True, volumes=self.volumes, desc=f"{verb}:{o.name}")) for o, r, cs in ood_readers(ctx)]
        t_data = time.perf_counter() - t0

        x_tr, y_tr, train_counts = self.training_arrays(ctx, hp, data["train"])
        batches, n_batches = shuffled_batches(*on_device(ctx, x_tr, y_tr), hp.batch_size, gen, hflip=hp.augment)
        validate = lambda: self.validation_score(ctx, model, data["val"], hp)  # noqa: E731
        t1 = time.perf_counter()
        chosen, history, train_timings = train_model(ctx, model, hp, batches, n_batches, validate, gen)
        t_train = time.perf_counter() - t1

        metrics, per_case, undefined = self.evaluate(ctx, model, data["test"], hp, "test")
        counts = {s: len(cs) for s, cs in splits.items()}
        counts.update(train_counts)
        for o, prep in oods:
            m, recs, und = self.evaluate(ctx, model, prep, hp, f"ood:{o.name}", f"_{slug(o.name)}")
            metrics.update(m)
            per_case += recs
            undefined.update(und)
            counts[f"ood:{o.name}"] = len(prep.cases)
        metrics.update(ood_summary(metrics, [o.name for o, _ in oods], self.ood_keys))
        baseline = self.baseline(ctx, model, data["test"], oods, hp)
        EpochResume(ctx, hp, runtime_hparams(ctx)).clear()  # scored: a stop now would not train again
        used = {"selected": chosen, **runtime_hparams(ctx)}
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts=counts,
            extra={"val_history": history, "hd95_undefined": undefined, "ood_sets": [o.name for o, _ in oods], "baseline": baseline,
                   "conventions": clean_conventions(hp, self.volumes)},
            flags=["validation-undefined"] if chosen.get("validation_undefined") else [],
            timings={"data_s": t_data, "train_s": t_train, **train_timings, "total_s": time.perf_counter() - t0},
        )
