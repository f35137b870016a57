"""Pretraining objectives: ``OBJECTIVES.get(name)(encoder, **cfg)`` -> ``PretrainObjective``.

An objective owns every trainable module beyond the encoder (projectors, GCNs, 1x1 convs ...) as
registered submodules, so ``objective.parameters()`` is exactly what the optimiser must see.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lvmbench.encoders.base import Encoder
from lvmbench.registry import Registry, import_members


@dataclass
class PretrainBatch:
    """Two augmented views of N images and where each view was cropped from its source image.

    ``boxes*`` are (N, 4) tensors (x1, y1, x2, y2) in the source image's normalised [0, 1]
    coordinates, after any flip (a flipped view has x1 > x2), so objectives can match locations.
    """

    view1: torch.Tensor
    view2: torch.Tensor
    boxes1: torch.Tensor
    boxes2: torch.Tensor


class PretrainObjective(nn.Module):
    name: ClassVar[str]

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder
        # The last step's (N, D) outputs the monitors read (detached): "embedding" (the encoder's
        # pooled vector of the first views, what evaluation embeds) and "projection" (what the loss
        # sees). Not state: never saved, never part of the graph.
        self.outputs: dict[str, torch.Tensor] = {}
        # Set by the trainer on monitor steps: objectives may then log costlier diagnostics
        # (graph matching: the noise-free matching's agreement with the identity).
        self.diagnose = False

    def remember(self, **tensors: torch.Tensor) -> None:
        self.outputs = {k: v.detach() for k, v in tensors.items()}

    def forward(self, batch: PretrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (scalar loss, logs) for one batch."""
        raise NotImplementedError

    def settings(self, options: dict) -> dict:
        """Every constructor setting, defaults included, as this objective was built from
        ``options`` (what pretrain.json and the resume check record: a default that changes
        between versions must not go unnoticed). Subclasses expand nested configs."""
        out: dict = {}
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "encoder") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[name] = options.get(name, p.default)
        out.update({k: v for k, v in options.items() if k not in out})  # **kwargs objectives
        return out


def _load(reg: Registry[type[PretrainObjective]]) -> None:
    import_members(__name__)


OBJECTIVES: Registry[type[PretrainObjective]] = Registry("pretraining objective", _load)
