"""Synthetic 3D datasets (NIfTI) in their publishers' layouts: BraTS-2018, MMWHS CT/MR, multi-site prostate.

Volumes are small (48 x 48 x 24, sliced along stored axis 2 like the real ones) with anisotropic
spacing; the structures are ellipsoids with distinct intensities that cover only part of the slices,
so balanced slice sampling and volumetric reassembly both matter.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from lvmbench.data.synth import SYNTH

SHAPE = (48, 48, 24)


def ellipsoid(shape: tuple[int, int, int], centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
    zz = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(zz, centre, radii)) <= 1.0


def save_nifti(arr: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.diag([*spacing, 1.0]))
    img.header.set_zooms(spacing)
    nib.save(img, str(path))


def _jitter(rng: np.random.Generator, c: tuple[float, float, float], s: float = 2.0) -> tuple[float, float, float]:
    return tuple(float(v + rng.uniform(-s, s)) for v in c)  # type: ignore[return-value]


@SYNTH.register("MICCAI_BraTS_2018_Data_Training")
def brats2018(out: Path, rng: np.random.Generator) -> None:
    """BraTS-2018 training folder: ``{HGG,LGG}/<subject>/<subject>_{flair,t1,t1ce,t2,seg}.nii.gz``."""
    base = out
    subjects = [("HGG", f"Brats18_TCIA01_{i:03d}_1") for i in range(1, 6)] + [("LGG", f"Brats18_TCIA09_{i:03d}_1") for i in range(1, 4)]
    for grade, subj in subjects:
        brain = ellipsoid(SHAPE, (24, 24, 12), (20, 17, 11))
        c = _jitter(rng, (24, 24, 12), 5)
        whole = ellipsoid(SHAPE, c, (rng.uniform(6, 9), rng.uniform(6, 9), rng.uniform(3, 5))) & brain
        core = ellipsoid(SHAPE, c, (4, 4, 2.5)) & whole
        seg = np.zeros(SHAPE, np.uint8)
        seg[whole] = 2  # oedema
        seg[core] = 4 if grade == "HGG" else 1
        noise = lambda: rng.normal(0, 15, SHAPE)  # noqa: E731
        seqs = {
            "flair": 300 * brain + 500 * whole + noise(),
            "t1": 400 * brain - 150 * whole + noise(),
            "t1ce": 400 * brain + 300 * core + noise(),
            "t2": 350 * brain + 350 * whole + noise(),
        }
        d = base / grade / subj
        for name, vol in seqs.items():
            save_nifti(np.clip(vol, 0, None).astype(np.int16), d / f"{subj}_{name}.nii.gz", (1.0, 1.0, 1.0))
        save_nifti(seg, d / f"{subj}_seg.nii.gz", (1.0, 1.0, 1.0))


# MMWHS label codes and the synthetic intensities of each structure (CT in HU-like units).
MMWHS_STRUCTURES = (
    # code, centre (x, y, z), radii, CT value, MR value
    (500, (24, 22, 12), (8, 7, 6), 330, 520),  # left ventricle blood cavity
    (205, (24, 22, 12), (11, 10, 7), 120, 300),  # myocardium (drawn first, cavity inside)
    (600, (16, 28, 12), (7, 7, 5), 260, 430),  # right ventricle
    (420, (32, 13, 11), (6, 6, 5), 620, 1000),  # left atrium (scored class 2): the brightest structure
    (550, (14, 14, 12), (5, 5, 4), 200, 380),  # right atrium
    (820, (26, 32, 12), (3, 3, 6), 480, 800),  # ascending aorta
    (850, (18, 36, 12), (3, 3, 5), 300, 470),  # pulmonary artery
)


def _mmwhs(out: Path, rng: np.random.Generator, modality: str) -> None:
    folder = out / f"{modality}_train"
    order = (205, 500, 600, 420, 550, 820, 850)
    by_code = {s[0]: s for s in MMWHS_STRUCTURES}
    for n in range(1001, 1009):
        lab = np.zeros(SHAPE, np.int16)
        img = rng.normal(-80 if modality == "ct" else 60, 20, SHAPE)
        body = ellipsoid(SHAPE, (24, 24, 12), (22, 20, 14))
        img[body] += 100
        shift = rng.uniform(-2, 2, 3)
        for code in order:
            _, c, r, ct, mr = by_code[code]
            m = ellipsoid(SHAPE, tuple(ci + si for ci, si in zip(c, shift)), tuple(ri * rng.uniform(0.85, 1.15) for ri in r))
            lab[m] = code
            img[m] = (ct if modality == "ct" else mr) + rng.normal(0, 15, int(m.sum()))
        dtype = np.int16 if modality == "ct" else np.float32
        save_nifti(img.astype(dtype), folder / f"{modality}_train_{n}_image.nii.gz", (0.8, 0.8, 1.6))
        save_nifti(lab, folder / f"{modality}_train_{n}_label.nii.gz", (0.8, 0.8, 1.6))


@SYNTH.register("MMWHS")
def mmwhs(out: Path, rng: np.random.Generator) -> None:
    """MMWHS 2017 training releases side by side: ``ct_train/ct_train_NNNN_{image,label}.nii.gz`` and
    ``mr_train/mr_train_NNNN_{image,label}.nii.gz``, labels 205/420/500/550/600/820/850."""
    _mmwhs(out, rng, "ct")
    _mmwhs(out, rng, "mr")


# Site appearance: (intensity scale, background, noise); the other sites shift away from BMC. The gland
# (scale * GLAND) must stand out of the pelvis around it (background + PELVIS) in every site, as it does
# in the real sites (SAM's prompt rows of Table 4 score 90-92 Dice on each): an invisible target would
# test nothing but the prompt. BIDMC keeps the brightest background, the most noise and the lowest
# contrast (about 2.4 noise sigma; BMC 7.5, RUNMC 10.4, HK 24.5).
GLAND, PELVIS = 230, 60
PROSTATE_SITES = {"BMC": (1.0, 80, 12), "RUNMC": (1.2, 60, 15), "BIDMC": (0.9, 100, 20), "HK": (1.5, 40, 10)}


@SYNTH.register("Prostate")
def prostate(out: Path, rng: np.random.Generator) -> None:
    """MS-Net layout: ``<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz`` (HK: ``_Segmentation``)."""
    for site, (scale, bg, sigma) in PROSTATE_SITES.items():
        for i in range(8 if site == "BMC" else 4):
            gland = ellipsoid(SHAPE, _jitter(rng, (24, 26, 12), 3), (rng.uniform(7, 10), rng.uniform(6, 9), rng.uniform(4, 6)))
            pelvis = ellipsoid(SHAPE, (24, 24, 12), (22, 18, 13))
            img = rng.normal(bg, sigma, SHAPE) + PELVIS * pelvis
            img[gland] = scale * GLAND + rng.normal(0, sigma, int(gland.sum()))
            suffix = "_Segmentation" if site == "HK" else "_segmentation"
            save_nifti(img.astype(np.float32), out / site / f"Case{i:02d}.nii.gz", (0.6, 0.6, 3.0))
            save_nifti(gland.astype(np.uint8), out / site / f"Case{i:02d}{suffix}.nii.gz", (0.6, 0.6, 3.0))
