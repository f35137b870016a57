"""Epoch-boundary checkpoints of end-to-end training (segmentation 2D and 3D): a unit stopped
half-way (Slurm preemption or time-out, a crash, Ctrl-C) continues after its last saved epoch.

The checkpoint lives under ``<cache>/resume/<protocol>/``, keyed by the unit, its resolved settings,
the task version, the split, the weights and the speed options, and is removed when the unit
finishes. It holds the model, optimiser, scheduler, selection state, history and the random
generators, so a resumed unit draws the same batches and flips as one that never stopped (same
numbers on CPU). Saving a U-Net with its Adam state costs seconds, so a checkpoint is written only
when at least ``LVMBENCH_RESUME_EVERY_S`` seconds (default 60) of training passed since the last one:
epochs that short are cheaper to redo than to save (the smoke suite never saves), an hour-long GPU
unit saves at every epoch boundary. ``0`` saves at every epoch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lvmbench.data.cache import cache_key
from lvmbench.errors import UserError

DEFAULT_EVERY_S = 60.0


def every_s() -> float:
    text = os.environ.get("LVMBENCH_RESUME_EVERY_S", "")
    try:
        value = float(text) if text.strip() else DEFAULT_EVERY_S
    except ValueError:
        raise UserError(f"LVMBENCH_RESUME_EVERY_S='{text}' is not a number of seconds", fix="e.g. LVMBENCH_RESUME_EVERY_S=60 (0: save at every epoch)") from None
    return max(0.0, value) if value == value else DEFAULT_EVERY_S


class EpochResume:
    """Load, save (throttled) and remove one unit's resume checkpoint."""

    def __init__(self, ctx: Any, settings: Any, extra: dict | None = None):
        key = cache_key(f"{ctx.unit.protocol}-resume", ctx.unit.key(), settings.model_dump(mode="json"), ctx.task.version, ctx.data.split.hash(), ctx.identity.weights_sha256, extra or {})
        self.path: Path = Path(ctx.cache_dir) / "resume" / ctx.unit.protocol / f"{key[:24]}.pt"
        self.what, self.unit = ctx.unit.protocol, ctx.unit.key()
        self.every = every_s()
        self.last = time.perf_counter()

    def load(self) -> dict | None:
        """The saved state, or None (none saved; an unreadable one is removed: the unit starts over)."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            int(saved["epoch"])
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: start over rather than fail
            tqdm.write(f"{self.what}: ignoring unreadable resume checkpoint {self.path} ({e.__class__.__name__}); starting at epoch 1")
            self.clear()
            return None
        tqdm.write(f"{self.what}: resuming {self.unit} after epoch {int(saved['epoch'])}")
        return saved

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.every

    def save(self, state: dict) -> None:
        """Atomic write: a stop mid-save leaves the previous checkpoint intact."""
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write the {self.what} resume checkpoint ({e.strerror})", path=self.path.parent, fix="free disk space, or pass a writable --cache-dir") from None
        self.last = time.perf_counter()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
