"""Model selection on validation, and the checks that keep it honest.

- A protocol that selects on validation refuses an empty validation split (one line and the fix)
  instead of silently keeping the last epoch or the first learning rate.
- A NaN validation score (AUC on a one-class validation split, Dice of an undefined case) never
  wins a comparison and never crashes a run; when no epoch had a finite score the last state is
  kept and the result is flagged ``validation-undefined``.
- A non-finite training loss stops the unit with one line (a diverged run scores nonsense).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from lvmbench import interrupt
from lvmbench.errors import UserError


class TrainingDiverged(UserError):
    """The loss became NaN/inf: the unit stops; nothing is written for it."""


def require_validation(ctx: Any, val_cases: list) -> None:
    if len(val_cases):
        return
    task = ctx.task
    raise UserError(
        f"task '{task.id}': protocol '{ctx.unit.protocol}' selects on the validation split, which is empty",
        path=(task.folder / "task.yaml") if task.folder else None,
        fix="give the split a validation part (split.val > 0, or a split file with a 'val' list; `lvmbench data import-splits --carve-val 0.2`)",
    )


class BestOnValidation:
    """Keeps the state with the highest finite validation score (the earliest wins ties)."""

    def __init__(self) -> None:
        self.best = -math.inf
        self.state: Any = None
        self.info: dict[str, Any] = {}
        self._last: tuple[Callable[[], Any], dict[str, Any]] | None = None
        self.undefined = 0

    def offer(self, score: float, state: Callable[[], Any], info: dict[str, Any]) -> bool:
        """``state`` is called only when this score is the new best (copying weights costs)."""
        self._last = (state, info)
        if score is None or not math.isfinite(float(score)):
            self.undefined += 1
            return False
        if score > self.best:
            self.best, self.state, self.info = float(score), state(), dict(info)
            return True
        return False

    @property
    def flags(self) -> list[str]:
        return ["validation-undefined"] if self.state is None and self._last is not None else []

    def state_dict(self) -> dict[str, Any]:
        """What a resume checkpoint keeps of the selection (``lvmbench.protocols.resume``)."""
        return {"best": self.best, "best_state": self.state, "best_info": self.info, "undefined": self.undefined}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.best, self.state, self.info, self.undefined = float(saved["best"]), saved["best_state"], dict(saved["best_info"]), int(saved["undefined"])

    def result(self, what: str) -> tuple[Any, dict[str, Any]]:
        """(state, selection record); the last offered state when no score was finite."""
        if self.state is not None:
            return self.state, self.info
        if self._last is None:
            raise RuntimeError(f"{what}: nothing was offered for selection")
        state, info = self._last
        return state(), {**info, "rule": "last (every validation score was undefined)", "validation_undefined": True}


class FiniteLoss:
    """Watches training losses without a device sync per step: non-finite steps are counted on
    the device and the count is read once per epoch (``end_epoch``)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._bad: torch.Tensor | None = None
        self._first_epoch: int | None = None

    def check(self, loss: torch.Tensor, epoch: int) -> None:
        interrupt.check()  # every training step of every protocol passes here: Ctrl-C stops between steps
        bad = (~torch.isfinite(loss.detach())).sum()
        self._bad = bad if self._bad is None else self._bad + bad
        if loss.device.type == "cpu" and int(bad):  # free on CPU: stop at the step itself
            self._raise(epoch)

    def end_epoch(self, epoch: int) -> None:
        if self._bad is not None and int(self._bad):
            self._raise(epoch)
        self._bad = None

    def _raise(self, epoch: int) -> None:
        raise TrainingDiverged(
            f"training diverged: the {self.what} loss became NaN/inf in epoch {epoch}",
            fix="lower lr (or set grad_clip / a warm-up schedule) in the task's protocol settings, and check the weights and images with `lvmbench data verify`",
        )
