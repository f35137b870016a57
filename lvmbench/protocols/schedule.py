"""Learning-rate schedules of the typed settings, as a per-step multiplier of the base rate.

One function of the optimisation step serves every protocol (heads on cached features, fine-tuning,
segmentation, detection): ``LambdaLR`` multiplies each parameter group's base rate by it, so a grid
of learning rates trained side by side shares one schedule shape. Milestones and warm-up are in
epochs; steps per epoch convert them, so the same YAML means the same curve at any batch size.
"""

from __future__ import annotations

import math

import torch

from lvmbench.protocols.settings import Schedule


def lr_factor(schedule: Schedule, step: int, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier of the base rate for optimisation step ``step`` (0-based)."""
    spe = max(1, steps_per_epoch)
    epoch = step / spe  # fractional epochs done before this step
    warm = schedule.warmup_epochs
    if warm > 0 and epoch < warm:
        start = schedule.warmup_start_factor
        return start + (1.0 - start) * (epoch / warm)
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "step":
        passed = sum(1 for m in schedule.milestones if step >= m * spe)
        return schedule.gamma**passed
    # cosine over what remains after warm-up, from 1 down to min_lr_factor at the last step
    total = max(1.0, epochs - warm)
    t = min(1.0, max(0.0, (epoch - warm) / total))
    floor = schedule.min_lr_factor
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def adam(params, device: torch.device, **kw) -> torch.optim.Adam:
    """Adam with its fused kernel where torch has one (CPU and CUDA): one kernel over all
    parameters instead of a loop of small ones. Measured on 2 CPU cores for ResNet-50's 23.5M
    parameters: 15 ms per step fused vs 51 ms with the default (foreach) implementation."""
    return torch.optim.Adam(params, fused=torch.device(device).type in ("cpu", "cuda"), **kw)


def make_scheduler(opt: torch.optim.Optimizer, schedule: Schedule, epochs: int, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` to step after every ``opt.step()``; its first factor applies at step 0."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step, epochs, steps_per_epoch))


def optimiser_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, params, grad_clip: float | None) -> float:
    """One training step as every protocol takes it: backward, gradient-norm clipping when set,
    the optimiser, then the per-step schedule. Returns the learning rate this step used (the first
    parameter group's, read before the schedule moves it on: what a result's history records)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    used = float(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
    return used
