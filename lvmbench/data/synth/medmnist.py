"""Synthetic MedMNIST file: ``medmnist/retinamnist.npz`` in the publisher's key layout.

28x28 RGB fundus-like images whose lesion count and size grow with the DR grade (0-4), labels
stored (N, 1) uint8 as the official files store them, and the publisher's train/val/test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvmbench.data.synth import SYNTH
from lvmbench.data.synth.draw import disk, noisy_background, tint

SIZE = 28
PER_GRADE = {"train": 12, "val": 4, "test": 6}


def _fundus28(rng: np.random.Generator, grade: int) -> np.ndarray:
    img = noisy_background(rng, SIZE, SIZE, 5, 4)
    img[disk(SIZE, SIZE, SIZE / 2, SIZE / 2, SIZE * 0.46)] += 130
    img[disk(SIZE, SIZE, SIZE / 2 + rng.uniform(-1, 1), SIZE * 0.72, 2.2)] += 90  # optic disc
    for _ in range(grade * 2):  # dark lesions: more and larger with each grade
        r, a = rng.uniform(0, SIZE * 0.36), rng.uniform(0, 2 * np.pi)
        img[disk(SIZE, SIZE, SIZE / 2 + r * np.sin(a), SIZE / 2 + r * np.cos(a), 0.8 + grade * 0.35)] -= 80
    return tint(img, (1.0, 0.55, 0.3))


@SYNTH.register("medmnist")
def medmnist(out: Path, rng: np.random.Generator) -> None:
    arrays: dict[str, np.ndarray] = {}
    for split, n in PER_GRADE.items():
        grades = np.repeat(np.arange(5), n)
        rng.shuffle(grades)
        arrays[f"{split}_images"] = np.stack([_fundus28(rng, int(g)) for g in grades]).astype(np.uint8)
        arrays[f"{split}_labels"] = grades.astype(np.uint8)[:, None]
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "retinamnist.npz", **arrays)
