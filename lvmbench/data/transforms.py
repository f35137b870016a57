"""Preprocessing shared by every 2D protocol: resize once (cached), normalise per batch on device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lvmbench.encoders.base import IMAGENET_MEAN, IMAGENET_STD, InputSpec

_RESAMPLE = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def resize_image(arr: np.ndarray, size: int | tuple[int, int], mode: str = "bilinear", channels: int = 3) -> np.ndarray:
    """HxW or HxWxC uint8 -> size x size x channels uint8 (``size`` = (h, w): h x w x channels)."""
    h, w = (size, size) if isinstance(size, int) else size
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1 and channels == 3:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 3 and channels == 1:
        arr = np.asarray(Image.fromarray(arr).convert("L"))[..., None]
    out = np.stack(
        [np.asarray(Image.fromarray(arr[..., c]).resize((w, h), _RESAMPLE[mode])) for c in range(arr.shape[2])],
        axis=2,
    )
    return np.ascontiguousarray(out)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Label maps are resized with nearest neighbour (labels must not be interpolated)."""
    m = mask.astype(np.int32)
    out = np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST))
    return out.astype(np.int64)


@dataclass(frozen=True)
class InputNorm:
    """uint8 pixels -> encoder input: ``(x / divide - mean) / std`` (no mean/std: just the division)."""

    divide: float = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def describe(self) -> dict[str, object]:
        return {"divide": self.divide, "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None}


IMAGENET = InputNorm(255.0, IMAGENET_MEAN, IMAGENET_STD)


def input_norm(setting: object, intensity: str, spec: InputSpec) -> InputNorm:
    """The normalisation a protocol's ``normalize`` setting names, else the task's ``intensity``.

    ``encoder`` (and the task intensity ``imagenet``, its historical name): [0, 1] then the
    encoder's own mean/std (ImageNet's for ImageNet-trained models); ``imagenet``: ImageNet's
    mean/std whatever the encoder says; ``raw255``: float 0-255, nothing else (LVM-Med's
    segmentation code); ``unit``: [0, 1]; an explicit ``{mean, std, pixel_range}``.
    """
    if setting is None:
        setting = "encoder" if intensity == "imagenet" else intensity
    if setting == "encoder":
        return InputNorm(255.0, tuple(spec.mean), tuple(spec.std))
    if setting == "imagenet":
        return IMAGENET
    if setting == "raw255":
        return InputNorm(1.0)
    if setting == "unit":
        return InputNorm(255.0)
    mean, std = getattr(setting, "mean", None), getattr(setting, "std", None)
    if mean is None or std is None:
        raise ValueError(f"unknown normalisation {setting!r}")
    return InputNorm(255.0 if setting.pixel_range == "unit" else 1.0, tuple(mean), tuple(std))  # type: ignore[union-attr]


def normalize_batch(x: torch.Tensor, norm: InputNorm) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float input for the encoder (see :class:`InputNorm`)."""
    x = x.float()
    if norm.divide != 1.0:
        x = x / norm.divide
    if norm.mean is None or norm.std is None:
        return x
    c = x.shape[1]
    mean = torch.tensor(_per_channel(norm.mean, c), device=x.device).view(1, c, 1, 1)
    std = torch.tensor(_per_channel(norm.std, c), device=x.device).view(1, c, 1, 1)
    return (x - mean) / std


def _per_channel(values: tuple[float, ...], c: int) -> list[float]:
    """One value per input channel: a 3-channel statistic on 1-channel input keeps its first value."""
    v = list(values)
    return v[:c] if len(v) >= c else v * c if len(v) == 1 else (v * c)[:c]
