"""The task's channel count and the encoder's input: told to plugins, checked before a unit runs.

A plugin encoder builder that takes an ``in_channels`` keyword is called with the task's
``preprocess.channels`` (1 for grey volumes, 3 otherwise), so it can build its first layer for it;
an encoder states what it accepts in ``input_spec.channels``. Before a unit trains, the two must
agree, or the protocol must be one that adapts a 3-channel first convolution to grey input
(segmentation's U-Net sums the RGB kernels, as LVM-Med did); otherwise the unit fails with one line
instead of a raw torch shape error mid-run.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from lvmbench.encoders.registry import ENCODERS
from lvmbench.errors import UserError


def accepts_in_channels(builder: Any) -> bool:
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return False
    # only a named parameter: a **kwargs catch-all may forward it where it does not belong
    return any(p.name == "in_channels" and p.kind is not p.VAR_POSITIONAL for p in params)


def channel_problem(encoder: nn.Module, channels: int, family: str) -> str | None:
    """Why ``encoder`` cannot take the task's ``channels``-channel input, or None."""
    spec = getattr(encoder, "input_spec", None)
    have = int(getattr(spec, "channels", 3))
    if have == channels:
        return None
    adaptable = family == "segmentation" and have == 3 and channels == 1 and any(isinstance(m, nn.Conv2d) and m.in_channels == 3 for m in encoder.modules())
    if adaptable:
        return None
    return f"takes {have}-channel input and the task gives {channels} channel(s)"


def check_channels(encoder: nn.Module, name: str, task: Any) -> None:
    problem = channel_problem(encoder, int(task.preprocess.channels), task.family)
    if problem is None:
        return
    want = int(task.preprocess.channels)
    raise UserError(
        f"encoder '{name}' {problem} (task '{task.id}', preprocess.channels: {want})",
        fix=(
            f"set preprocess.channels: {int(getattr(getattr(encoder, 'input_spec', None), 'channels', 3))} in the task (grey images are then repeated into 3 channels)"
            " or give the encoder's builder an in_channels keyword so it builds its input layer for the task"
        ),
    )


def takes_channels(name: str) -> bool:
    """True when ``name`` is a registered builder that takes ``in_channels``."""
    return name in ENCODERS and accepts_in_channels(ENCODERS.get(name))
