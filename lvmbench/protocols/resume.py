"""Epoch-boundary checkpoints of end-to-end training — segmentation (2D, 3D, prompts), detection and
fine-tuning share this one module: a unit stopped half-way (Slurm preemption or time-out, a crash,
Ctrl-C) continues after its last saved epoch.

The checkpoint lives under ``<cache>/resume/<protocol>/``, keyed by the unit and its **result
identity** (split, task spec with resolved settings, code versions, data, training subset, encoder,
run options: ``lvmbench.identity``) plus :data:`RESUME_FORMAT`: whatever would make the finished
result another result (a changed ``preprocess.size``, a new split, ``--amp``) also makes an old
checkpoint another checkpoint, never resumed. It holds the model, optimiser, scheduler and the
protocol's own state (epoch, selection, history, random generators), so a resumed unit draws the
same batches as one that never stopped (same numbers on CPU), and is removed when the unit
finishes. Saving a model with its Adam state costs seconds, so a checkpoint is written only when at
least ``LVMBENCH_RESUME_EVERY_S`` seconds (default 60) of training passed since the last one: epochs
that short are cheaper to redo than to save (the smoke suite never saves), an hour-long GPU unit
saves at every epoch boundary. ``0`` saves at every epoch.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lvmbench.data.cache import cache_key
from lvmbench.errors import UserError

# Bump when what a checkpoint holds changes: older checkpoints are then never read.
RESUME_FORMAT = 2
DEFAULT_EVERY_S = 60.0


def every_s() -> float:
    text = os.environ.get("LVMBENCH_RESUME_EVERY_S", "")
    try:
        value = float(text) if text.strip() else DEFAULT_EVERY_S
    except ValueError:
        raise UserError(f"LVMBENCH_RESUME_EVERY_S='{text}' is not a number of seconds", fix="e.g. LVMBENCH_RESUME_EVERY_S=60 (0: save at every epoch)") from None
    return max(0.0, value) if value == value else DEFAULT_EVERY_S


def resume_key(ctx: Any) -> str:
    """The unit, its result identity and the format; a context built without an identity (a test,
    a benchmark) falls back to the settings, task and split it was given."""
    identity = ctx.result_identity or {
        "settings": ctx.settings.model_dump(mode="json"),
        "task": ctx.task.model_dump(mode="json", exclude={"folder"}),
        "split": ctx.data.split.hash(),
    }
    return cache_key("resume", RESUME_FORMAT, ctx.unit.key(), identity, ctx.encoder_identity.weights_sha256)


class Resume:
    """Restore, save (throttled) and remove one unit's resume checkpoint."""

    def __init__(self, ctx: Any):
        self.path: Path = Path(ctx.cache_dir) / "resume" / ctx.unit.protocol / f"{resume_key(ctx)[:24]}.pt"
        self.what, self.unit = ctx.unit.protocol, ctx.unit.key()
        self.every = every_s()
        self.last = time.perf_counter()

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> dict | None:
        """Load the saved model, optimiser and scheduler in place and return the protocol's state
        (``state["epoch"]`` the last finished epoch), or None: nothing saved, or a checkpoint that
        does not load (damaged, foreign), which is removed and leaves the fresh objects untouched."""
        if not self.path.is_file():
            return None
        fresh = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict()))
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            state = dict(saved["state"])
            int(state["epoch"])
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
        except Exception as e:  # noqa: BLE001 - saved by other code or damaged: start over rather than fail
            tqdm.write(f"{self.what}: ignoring unreadable resume checkpoint {self.path} ({e.__class__.__name__}); starting at epoch 1")
            model.load_state_dict(fresh[0])
            opt.load_state_dict(fresh[1])
            sched.load_state_dict(fresh[2])
            self.clear()
            return None
        tqdm.write(f"{self.what}: resuming {self.unit} after epoch {int(state['epoch'])}")
        return state

    def restore_run(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, selector: Any) -> tuple[dict | None, list[dict], int]:
        """``restore``, then the parts every epoch loop shares: the selection state, torch's RNG;
        returns (the saved state or None, the epoch history so far, the first epoch to run)."""
        saved = self.restore(model, opt, sched)
        if saved is None:
            return None, [], 1
        selector.load_state_dict(saved)
        torch.set_rng_state(saved["rng"])
        return saved, list(saved["history"]), int(saved["epoch"]) + 1

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.every

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, state: dict) -> None:
        """Atomic write: a stop mid-save leaves the previous checkpoint intact."""
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"format": RESUME_FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "state": state}, tmp)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write the {self.what} resume checkpoint ({e.strerror})", path=self.path.parent, fix="free disk space, or pass a writable --cache-dir") from None
        self.last = time.perf_counter()

    def save_if_due(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, state: dict) -> None:
        if self.due():
            self.save(model, opt, sched, state)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
