"""Image folders and configs for the pretraining tests (no tests here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lvmbench.pretrain.trainer import PretrainConfig

SIZE = 32


def write_images(root: Path, count: int, seed: int = 0) -> Path:
    """Distinct images: a coloured background with a few coloured rectangles each."""
    rng = np.random.default_rng(seed)
    (root / "sub").mkdir(parents=True, exist_ok=True)  # the scan is recursive
    for i in range(count):
        a = np.zeros((48, 56, 3), np.uint8) + rng.integers(0, 120, 3).astype(np.uint8)
        for _ in range(4):
            y, x = rng.integers(0, 36), rng.integers(0, 44)
            a[y : y + rng.integers(6, 20), x : x + rng.integers(6, 20)] = rng.integers(0, 255, 3)
        Image.fromarray(a).save(root / ("sub" if i % 3 == 0 else ".") / f"im{i:02d}.png")
    return root


def config(images: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(data=[str(images)], encoder="resnet18", image_size=SIZE, batch_size=16, steps=20, out=str(out), workers=0, progress=False, checkpoint_every=100)
    base.update(kw)
    return PretrainConfig(**base)
