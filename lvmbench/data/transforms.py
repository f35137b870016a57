"""Preprocessing shared by every 2D protocol: resize once (cached), normalise per batch on device."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lvmbench.encoders.base import InputSpec

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


def normalize_batch(x: torch.Tensor, spec: InputSpec, intensity: str = "imagenet") -> torch.Tensor:
    """uint8 (N, C, H, W) -> float input for the encoder.

    ``imagenet``: scale to [0, 1] then the encoder's mean/std (its input spec). ``raw255``: float
    0-255 with no normalisation (LVM-Med's segmentation code). ``unit``: [0, 1].
    """
    x = x.float()
    if intensity == "raw255":
        return x
    x = x / 255.0
    if intensity == "unit":
        return x
    c = x.shape[1]
    mean = torch.tensor(spec.mean[:c] if len(spec.mean) >= c else spec.mean * c, device=x.device).view(1, c, 1, 1)
    std = torch.tensor(spec.std[:c] if len(spec.std) >= c else spec.std * c, device=x.device).view(1, c, 1, 1)
    return (x - mean) / std
