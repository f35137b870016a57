"""Normalised surface Dice per case: ``lvmbench.metrics.surface`` vs DeepMind's ``surface-distance``
(the baseline, same numbers) and MONAI's HD95 (what the clean scorer already spends per case), in one run.

Synthetic cases of the sizes the tasks score at native resolution: a smooth object (Gaussian-filtered
noise, thresholded) and a prediction that is the object shifted and partly eroded, per foreground
class. Passes are interleaved ``--repeats`` times and medians reported, so load from other processes
hits all alike. Needs the dev extra (surface-distance).

    .venv/bin/python benchmarks/surface_dice.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from scipy import ndimage
from tabulate import tabulate

from lvmbench.metrics.segmentation import hd95
from lvmbench.metrics.surface import nsd_per_class

# (name, shape, spacing, foreground classes)
SIZES = [
    ("2D polyp, Kvasir-SEG native", (576, 720), (1.0, 1.0), 1),
    ("2D fundus, DRIVE native", (584, 565), (1.0, 1.0), 1),
    ("3D hippocampus, MSD", (36, 50, 35), (1.0, 1.0, 1.0), 2),
    ("3D prostate MRI", (24, 384, 384), (3.0, 0.6, 0.6), 1),
    ("3D BraTS volume", (155, 240, 240), (1.0, 1.0, 1.0), 1),
]
# Not a default row (minutes): ("3D MMWHS CT, 7 structures", (200, 512, 512), (0.6, 0.4, 0.4), 7) --
# each synthetic structure spans the whole volume, so each costs a 52M-voxel distance transform.


def case(shape: tuple[int, ...], classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: ``classes`` smooth structures covering ~15% of the image together; prediction:
    the same shifted by 2 voxels on the last axis with a rough boundary (half its boundary voxels
    dropped at random), so both surfaces are large and irregular."""
    coarse = tuple(max(2, s // 8) for s in shape)
    field = ndimage.zoom(rng.random(coarse), [s / c for s, c in zip(shape, coarse)], order=1)[tuple(slice(0, s) for s in shape)]
    gt = np.zeros(shape, np.uint8)
    edges = np.quantile(field, np.linspace(0.85, 1.0, classes + 1))
    for c in range(classes):
        gt[(field >= edges[c]) & (field < edges[c + 1])] = c + 1
    pred = np.roll(gt, 2, axis=-1)
    fg = pred > 0
    pred[(fg ^ ndimage.binary_erosion(fg)) & (rng.random(shape) < 0.5)] = 0
    return pred, gt


def deepmind_per_class(pred: np.ndarray, gt: np.ndarray, classes: int, spacing, tol: float) -> list[float]:
    import surface_distance as sd

    if "Inf" not in np.__dict__:
        np.Inf = np.inf  # surface-distance 0.1 on NumPy 2
    return [float(sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(gt == c, pred == c, list(spacing)), tol)) for c in range(1, classes + 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=2.0)
    ap.add_argument("--skip", default="", help="comma-separated row names to leave out (substring match)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, spacing, k in SIZES:
        if any(s and s in name for s in args.skip.split(",")):
            continue
        pred, gt = case(shape, k, rng)
        classes = list(range(1, k + 1))
        runs = {"lvmbench": (lambda: nsd_per_class(pred, gt, classes, args.tolerance, spacing).tolist()),
                "surface-distance": (lambda: deepmind_per_class(pred, gt, k, spacing, args.tolerance)),
                "MONAI HD95": (lambda: hd95(pred, gt, classes, spacing).tolist())}
        times: dict[str, list[float]] = {n: [] for n in runs}
        values: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for n, fn in runs.items():
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    values[n] = fn()
                times[n].append(time.perf_counter() - t)
        diff = max(abs(a - b) for a, b in zip(values["lvmbench"], values["surface-distance"]))
        med = {n: statistics.median(v) for n, v in times.items()}
        rows.append([name, "x".join(map(str, shape)), k, f"{med['lvmbench']:.3f}", f"{med['surface-distance']:.3f}",
                     f"{med['surface-distance'] / med['lvmbench']:.1f}", f"{med['MONAI HD95']:.3f}", f"{np.mean(values['lvmbench']):.4f}", f"{diff:.1e}"])
    print(tabulate(rows, headers=["case", "shape", "classes", "lvmbench NSD s", "surface-distance s", "speed-up", "HD95 s", "NSD", "max |diff|"]))


if __name__ == "__main__":
    main()
