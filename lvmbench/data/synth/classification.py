"""Synthetic classification datasets: Kaggle brain-tumour folders and FGADR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lvmbench.data.synth import SYNTH
from lvmbench.data.synth.draw import disk, ellipse, noisy_background, tint, to_uint8

BRAIN_FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


def _brain_slice(rng: np.random.Generator, cls: int, size: int = 64) -> np.ndarray:
    img = noisy_background(rng, size, size, 10, 6)
    head = ellipse(size, size, size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2), size * 0.42, size * 0.36)
    img[head] += 90
    img[ellipse(size, size, size / 2, size / 2, size * 0.34, size * 0.28)] += 25
    if cls == 0:  # glioma: large irregular bright mass inside a hemisphere
        cy, cx = size * rng.uniform(0.35, 0.6), size * rng.choice([0.35, 0.65])
        for _ in range(3):
            img[disk(size, size, cy + rng.uniform(-4, 4), cx + rng.uniform(-4, 4), size * 0.09)] += 55
    elif cls == 1:  # meningioma: round mass on the rim
        ang = rng.uniform(0, 2 * np.pi)
        img[disk(size, size, size / 2 + np.sin(ang) * size * 0.33, size / 2 + np.cos(ang) * size * 0.28, size * 0.1)] += 110
    elif cls == 3:  # pituitary: small bright spot low in the midline
        img[disk(size, size, size * 0.66, size / 2 + rng.uniform(-2, 2), size * 0.06)] += 130
    return to_uint8(img)


@SYNTH.register("BrainTumor")
def brain_tumor(out: Path, rng: np.random.Generator) -> None:
    """Kaggle 'Brain Tumor Classification (MRI)' (sartajbhuvaji) layout: Training/ and Testing/."""
    for split, n in (("Training", 24), ("Testing", 8)):
        for cls, folder in enumerate(BRAIN_FOLDERS):
            d = out / split / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_brain_slice(rng, cls)).save(d / f"image({i + 1}).jpg", quality=95)


def _fundus(rng: np.random.Generator, grade: int, size: int = 64) -> np.ndarray:
    img = noisy_background(rng, size, size, 5, 4)
    eye = disk(size, size, size / 2, size / 2, size * 0.46)
    img[eye] += 120
    img[disk(size, size, size / 2 + rng.uniform(-3, 3), size * 0.7, size * 0.08)] += 90  # optic disc
    # lesions: more, larger dark-red spots with each grade
    for _ in range(grade * 3):
        r, a = rng.uniform(0, size * 0.38), rng.uniform(0, 2 * np.pi)
        img[disk(size, size, size / 2 + r * np.sin(a), size / 2 + r * np.cos(a), 1.5 + grade * 0.5)] -= 70
    return tint(img, (1.0, 0.55, 0.3))


@SYNTH.register("FGADR")
def fgadr(out: Path, rng: np.random.Generator) -> None:
    """FGADR Seg-set layout: Original_Images/NNNN_x.png + DR_Seg_Grading_Label.csv (name,grade)."""
    d = out / "Original_Images"
    d.mkdir(parents=True)
    rows = []
    n = 0
    for grade in range(5):
        for _ in range(24):
            n += 1
            name = f"{n:04d}_{'ABCDE'[n % 5]}.png"
            Image.fromarray(_fundus(rng, grade)).save(d / name)
            rows.append(f"{name},{grade}")
    (out / "DR_Seg_Grading_Label.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
