"""Faster R-CNN with FPN over any encoder, behind one backend interface.

A backend builds the detector around an ``Encoder`` (its ``feature_maps`` at strides 4..32 feed an FPN)
and exposes ``losses`` and ``predict`` on lists of normalised image tensors, so the detection protocol
owns data, schedule, selection and scoring once for every backend. Backends: ``torchvision``
(always installed) and ``mmdet`` (needs an mmcv build with compiled ops, see scripts/build_mmcv.sh).
"""

from __future__ import annotations

import importlib
from typing import ClassVar

import torch
from torch import nn

from lvmbench.encoders.base import Encoder
from lvmbench.errors import UserError
from lvmbench.protocols.settings import DetectionSettings
from lvmbench.registry import Registry

# Chosen from benchmarks/detection_backends.py on the 2-core CPU reference machine (alternating steps,
# same encoder copy, images, boxes and mmdet's default detector sizes): ResNet-50, 256 px, batch 2:
# torchvision 13.4 s / mmdet 15.0 s per training step (median of 5), inference 3.6 / 6.0 s per batch;
# ResNet-18, 128 px, batch 4: 8.1 / 8.0 s per step, inference 2.6 / 3.3 s. Training is on par or
# faster, inference faster, and torchvision needs no compiled mmcv, so it is the default.
DEFAULT_BACKEND = "torchvision"


class DetectorBackend:
    """``build`` -> model; ``losses`` (train mode) -> dict of scalar losses; ``predict`` (eval mode)
    -> per image ``{"boxes" (N, 4) xyxy in input pixels, "scores", "labels" (0-based)}``."""

    name: ClassVar[str]

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend cannot run here (one line), or None."""
        return None

    def build(self, encoder: Encoder, num_classes: int, hp: DetectionSettings) -> nn.Module:
        raise NotImplementedError

    def losses(self, model: nn.Module, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, model: nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        raise NotImplementedError

    def body(self, model: nn.Module) -> nn.Module:
        """The ``EncoderBody`` inside ``model`` (freezing and BN handling act on it)."""
        raise NotImplementedError


def _load(reg: Registry[type[DetectorBackend]]) -> None:
    for mod in ("torchvision_backend", "mmdet_backend"):
        importlib.import_module(f"{__name__}.{mod}")


BACKENDS: Registry[type[DetectorBackend]] = Registry("detection backend", _load)


def get_backend(name: str | None) -> DetectorBackend:
    name = name or DEFAULT_BACKEND
    cls = BACKENDS.get(name)
    why = cls.unavailable()
    if why:
        raise UserError(f"detection backend '{name}' cannot run here: {why}", fix="set hyperparameter backend: torchvision, or build mmcv with scripts/build_mmcv.sh")
    return cls()
