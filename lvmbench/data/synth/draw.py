"""Drawing helpers for the synthetic datasets (numpy only)."""

from __future__ import annotations

import numpy as np


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    y, x = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = x * c + y * s, -x * s + y * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def noisy_background(rng: np.random.Generator, h: int, w: int, base: float, sigma: float = 12.0) -> np.ndarray:
    img = np.full((h, w), base, np.float32) + rng.normal(0, sigma, (h, w)).astype(np.float32)
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def tint(gray: np.ndarray, rgb: tuple[float, float, float]) -> np.ndarray:
    return to_uint8(np.stack([gray * c for c in rgb], axis=2))
