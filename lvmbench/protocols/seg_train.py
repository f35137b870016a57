"""The segmentation training loop (2D and slice-wise 3D U-Nets), as LVM-Med's R50 U-Net code runs it
(reference §1.3-1.4): Adam (betas 0.9/0.999, no weight decay), loss = cross-entropy + (1 - soft Dice
averaged over all classes, pooled over the batch, eps 1e-6) — MONAI's ``DiceCELoss(batch=True)``
computes exactly that — gradient-norm clipping at 1, validation after every epoch, the best
validation score selects the checkpoint. A stopped unit resumes at its last saved epoch
(``lvmbench.protocols.resume``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from monai.losses import DiceCELoss
from torch import nn
from tqdm.auto import tqdm

from lvmbench.data.batches import batch_bounds
from lvmbench.data.transforms import normalize_batch
from lvmbench.heads.unet import UNet
from lvmbench.interrupt import interruptible
from lvmbench.protocols.base import RunContext
from lvmbench.protocols.epoch_log import epoch_line
from lvmbench.protocols.features import autocast, model_layout
from lvmbench.protocols.resume import Resume
from lvmbench.protocols.schedule import adam, make_scheduler, optimiser_step
from lvmbench.protocols.selection import BestOnValidation, FiniteLoss
from lvmbench.protocols.settings import SegSettings


def build_model(ctx: RunContext) -> UNet:
    pre = ctx.task.preprocess
    hp: SegSettings = ctx.settings  # type: ignore[assignment]
    model = UNet(ctx.make_encoder(), ctx.task.num_classes, in_channels=pre.channels, decoder_channels=hp.decoder_channels)
    model = model.to(ctx.device)
    if ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if ctx.run.compile:
        model.compile()  # in place: state_dict keys stay those of the plain model
    return model


def runtime_hparams(ctx: RunContext) -> dict[str, bool]:
    """The speed options a result records beside the task's hyperparameters."""
    return {"amp": ctx.run.amp, "compile": ctx.run.compile}


def on_device(ctx: RunContext, *tensors: torch.Tensor, limit_bytes: int = 2 << 30) -> tuple[torch.Tensor, ...]:
    """The in-memory uint8 training arrays moved to the GPU once when they fit in ``limit_bytes``:
    a batch is then an index on the device, not a synchronous copy from pageable host memory."""
    if ctx.device.type != "cuda" or sum(t.numel() * t.element_size() for t in tensors) > limit_bytes:
        return tensors
    return tuple(t.to(ctx.device) for t in tensors)


def model_input(ctx: RunContext, model: UNet, x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, S, S) -> the float input the encoder expects (paper: raw 0-255)."""
    x = x.to(ctx.device, non_blocking=True)
    if x.shape[1] != model.in_channels:
        x = x.expand(-1, model.in_channels, -1, -1)
    return model_layout(normalize_batch(x, ctx.input_norm(model.encoder.input_spec)))


def dice_ce_loss() -> nn.Module:
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-6, smooth_dr=1e-6)


def shuffled_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator, hflip: bool = False, drop_last: bool = False) -> tuple[Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]], int]:
    """A fresh permutation per epoch over in-memory arrays, cut by
    :func:`lvmbench.data.batches.batch_bounds`: every image each epoch unless ``drop_last`` (a
    last batch of one image joins the one before, for BatchNorm). ``hflip``: each image and its
    mask are flipped left-right together with probability 1/2. Returns the batch factory and its
    length."""
    n = len(x)
    bounds = batch_bounds(n, batch_size, drop_last)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(n, generator=gen)
        for a, b in bounds:
            idx = perm[a:b]
            xb, yb = x[idx], y[idx]
            if hflip:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(xb.device)
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                yb = torch.where(flip.view(-1, 1, 1), yb.flip(-1), yb)
            yield xb, yb

    return batches, max(1, len(bounds))


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
    amp = ctx.amp
    selector = BestOnValidation()
    wait = loop = val_time = 0.0
    images = all_steps = 0
    resume = Resume(ctx)
    saved, history, first = resume.restore_run(model, opt, sched, selector)
    if saved is not None:
        wait, loop, val_time, images, all_steps = saved["timings"]
        if gen is not None:
            gen.set_state(saved["gen"])
    for epoch in range(first, hp.epochs + 1):
        model.train()
        # the epoch's loss is summed on the device (float64, as Python floats would) so that no
        # step waits for the GPU to report its loss
        total, steps = torch.zeros((), dtype=torch.float64, device=ctx.device), 0
        lr_first = lr_last = hp.lr  # the rates of the epoch's first and last steps
        t_loop = t_wait = time.perf_counter()
        for x, y in tqdm(batches(epoch), desc=f"{ctx.unit.protocol} e{epoch}", total=n_batches, disable=not ctx.progress, leave=False):
            wait += time.perf_counter() - t_wait
            inp = model_input(ctx, model, x)
            target = y.to(ctx.device, non_blocking=True).long().unsqueeze(1)
            with autocast(ctx.device, amp):
                logits = model(inp)
            loss = loss_fn(logits.float(), target)
            guard.check(loss, epoch)
            lr_last = optimiser_step(loss, opt, sched, model.parameters(), hp.grad_clip)
            lr_first = lr_last if steps == 0 else lr_first
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
        history.append({"epoch": epoch, "loss": float(total) / max(1, steps), "val": val, "lr": lr_first, "lr_last": lr_last})
        epoch_line(ctx, epoch, hp.epochs, t_loop, loss=history[-1]["loss"], **{f"val_{hp.select_metric}": val})
        # the earliest epoch wins ties; a NaN score never wins
        selector.offer(val, lambda: {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, {"epoch": epoch, "val_primary": val})
        if epoch < hp.epochs:
            resume.save_if_due(model, opt, sched, {
                "epoch": epoch, "history": history,
                **selector.state_dict(),
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
    amp = ctx.amp
    for i in interruptible(range(0, len(images), batch_size)):
        with autocast(ctx.device, amp):
            out = model(model_input(ctx, model, images[i : i + batch_size]))
        yield i, out.float()
