"""Synthetic 2D segmentation datasets in their publishers' raw layouts.

Masks follow shapes drawn into the images with clear contrast (lesions, polyps, vessels, organs), so
a U-Net learns them in a few epochs; sizes differ from the 64 px working size (and are not always
square) so the native-resolution ("clean") metrics really upsample predictions back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from lvmbench.data.synth import SYNTH
from lvmbench.data.synth.draw import disk, ellipse, noisy_background, tint, to_uint8


def _save_mask(mask: np.ndarray, path: Path, **kw) -> None:
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(path, **kw)


def _blob(rng: np.random.Generator, h: int, w: int, rmin: float, rmax: float) -> np.ndarray:
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    return ellipse(h, w, cy, cx, rng.uniform(rmin, rmax), rng.uniform(rmin, rmax), rng.uniform(0, np.pi))


@SYNTH.register("ISIC2018")
def isic2018(out: Path, rng: np.random.Generator) -> None:
    """ISIC-2018 Task 1 training layout: dark lesions on skin; masks 0/255 PNG."""
    img_dir, gt_dir = out / "ISIC2018_Task1-2_Training_Input", out / "ISIC2018_Task1_Training_GroundTruth"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    (img_dir / "ATTRIBUTION.txt").write_text("synthetic images written by lvmbench\n", encoding="utf-8")
    for i in range(48):
        h, w = 60, 80
        lesion = _blob(rng, h, w, 8, 18)
        g = noisy_background(rng, h, w, 185, 8)
        g[lesion] -= 95
        img = tint(g, (1.0, 0.78, 0.66))
        name = f"ISIC_{i:07d}"
        Image.fromarray(img).save(img_dir / f"{name}.jpg", quality=92)
        _save_mask(lesion, gt_dir / f"{name}_segmentation.png")


@SYNTH.register("Kvasir-SEG")
def kvasir_seg(out: Path, rng: np.random.Generator) -> None:
    """Kvasir-SEG layout: images/*.jpg, masks/*.jpg (JPEG masks) and kavsir_bboxes.json."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir(parents=True)
    boxes = {}
    for i in range(48):
        h, w = 64, 72
        mask = _blob(rng, h, w, 7, 14)
        if i % 4 == 0:
            mask |= _blob(rng, h, w, 4, 7)
        g = noisy_background(rng, h, w, 110, 10)
        g[mask] += 90
        img = tint(g, (1.0, 0.55, 0.5))
        name = f"cju{i:04d}synth{i * 7919 % 10000:04d}"
        Image.fromarray(img).save(out / "images" / f"{name}.jpg", quality=90)
        _save_mask(mask, out / "masks" / f"{name}.jpg", quality=90)
        labels, n = ndimage.label(mask)
        bbox = []
        for sl in ndimage.find_objects(labels):
            ys, xs = sl
            bbox.append({"label": "polyp", "xmin": xs.start, "ymin": ys.start, "xmax": xs.stop - 1, "ymax": ys.stop - 1})
        boxes[name] = {"height": h, "width": w, "bbox": bbox}
    (out / "kavsir_bboxes.json").write_text(json.dumps(boxes), encoding="utf-8")


def _vessels(rng: np.random.Generator, h: int, w: int, n: int, width: float) -> np.ndarray:
    """Curved vessel tree: sinusoidal arcs leaving the optic disc."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    out = np.zeros((h, w), bool)
    oy, ox = h * rng.uniform(0.4, 0.6), w * 0.72
    for k in range(n):
        ang = np.pi * (0.55 + 0.9 * k / max(1, n - 1)) + rng.uniform(-0.15, 0.15)
        amp, freq = rng.uniform(2, 5), rng.uniform(0.05, 0.12)
        # distance of each pixel to the ray from the disc, bent by a sinusoid along its length
        dx, dy = np.cos(ang), np.sin(ang)
        along = (xx - ox) * dx + (yy - oy) * dy
        across = -(xx - ox) * dy + (yy - oy) * dx - amp * np.sin(freq * along * 2 * np.pi / 2)
        out |= (along > 0) & (np.abs(across) <= width / 2)
    return out


def _fundus(rng: np.random.Generator, h: int, w: int, colour: tuple[float, float, float], base: float, width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fov = disk(h, w, h / 2, w / 2, min(h, w) * 0.48)
    vessels = _vessels(rng, h, w, int(rng.integers(4, 7)), width) & fov
    g = noisy_background(rng, h, w, 0, 3)
    g[fov] += base
    g[vessels] -= base * 0.6
    return tint(g, colour), vessels, fov


@SYNTH.register("DRIVE")
def drive(out: Path, rng: np.random.Generator) -> None:
    """DRIVE layout: training 21.. and test 01.. with TIFF images, GIF 1st_manual and FOV masks."""
    for folder, kind, nums in (("training", "training", range(21, 41)), ("test", "test", range(1, 21))):
        for sub in ("images", "1st_manual", "mask"):
            (out / folder / sub).mkdir(parents=True)
        for n in nums:
            img, vessels, fov = _fundus(rng, 64, 62, (1.0, 0.5, 0.25), 170, 3.0)
            Image.fromarray(img).save(out / folder / "images" / f"{n:02d}_{kind}.tif")
            _save_mask(vessels, out / folder / "1st_manual" / f"{n:02d}_manual1.gif")
            _save_mask(fov, out / folder / "mask" / f"{n:02d}_{kind}_mask.gif")


@SYNTH.register("CHASE_DB1")
def chase_db1(out: Path, rng: np.random.Generator) -> None:
    """CHASE_DB1 layout: Image_NN{L,R}.jpg + _1stHO.png / _2ndHO.png; darker, redder fundus than DRIVE."""
    out.mkdir(parents=True, exist_ok=True)
    for child in range(1, 15):
        for eye in "LR":
            img, vessels, _ = _fundus(rng, 68, 72, (1.0, 0.35, 0.15), 140, 3.0)
            stem = f"Image_{child:02d}{eye}"
            Image.fromarray(img).save(out / f"{stem}.jpg", quality=92)
            _save_mask(vessels, out / f"{stem}_1stHO.png")
            _save_mask(ndimage.binary_dilation(vessels), out / f"{stem}_2ndHO.png")


@SYNTH.register("Dataset_BUSI_with_GT")
def busi(out: Path, rng: np.random.Generator) -> None:
    """BUSI (Kaggle ``Dataset_BUSI_with_GT``) layout: benign/malignant/normal folders, ``<class> (<n>).png`` + ``_mask.png`` (+ ``_mask_1.png``)."""
    for cls, n in (("benign", 24), ("malignant", 20), ("normal", 6)):
        d = out / cls
        d.mkdir(parents=True)
        for i in range(1, n + 1):
            h, w = 64 + 8 * (i % 3), 80
            g = noisy_background(rng, h, w, 120, 25)
            g[: h // 6] += 40  # bright skin layer
            masks = []
            if cls != "normal":
                masks.append(_blob(rng, h, w, 7, 15 if cls == "benign" else 18))
                if cls == "benign" and i % 5 == 0:
                    masks.append(_blob(rng, h, w, 4, 7) & ~masks[0])
            for m in masks:
                g[m] = g[m] * 0.25 + 10
            img = np.repeat(to_uint8(g)[..., None], 3, axis=2)
            Image.fromarray(img).save(d / f"{cls} ({i}).png")
            _save_mask(masks[0] if masks else np.zeros((h, w), bool), d / f"{cls} ({i})_mask.png")
            for k, m in enumerate(masks[1:], start=1):
                _save_mask(m, d / f"{cls} ({i})_mask_{k}.png")


@SYNTH.register("JSRT")
def jsrt(out: Path, rng: np.random.Generator) -> None:
    """JSRT films as raw big-endian 12-bit ``All247images/*.IMG`` (128², inverted like the originals)
    with SCR-style GIF masks at half resolution in ``SCR/fold{1,2}/masks/<organ>/``."""
    (out / "All247images").mkdir(parents=True)
    organs = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
    for fold in ("fold1", "fold2"):
        for organ in organs:
            (out / "SCR" / fold / "masks" / organ).mkdir(parents=True)
    names = [f"JPCLN{i:03d}" for i in range(1, 21)] + [f"JPCNN{i:03d}" for i in range(1, 21)]
    s = 64  # mask size; films are 2x
    for k, name in enumerate(names):
        # whole-chest shifts as well as per-organ jitter: films are not aligned, so the training set's
        # mean mask (a baseline every unit must beat) is a weak predictor, as it should be
        dy, dx = rng.uniform(-7, 7, size=2)
        j = lambda: rng.uniform(-2, 2)  # noqa: E731
        m = {
            "right lung": ellipse(s, s, 30 + dy + j(), 20 + dx + j(), 18, 9),
            "left lung": ellipse(s, s, 30 + dy + j(), 44 + dx + j(), 18, 9),
            "heart": ellipse(s, s, 40 + dy + j(), 36 + dx + j(), 9, 10),
            "right clavicle": ellipse(s, s, 11 + dy + j(), 20 + dx + j(), 2.5, 11, 0.3),
            "left clavicle": ellipse(s, s, 11 + dy + j(), 44 + dx + j(), 2.5, 11, -0.3),
        }
        g = noisy_background(rng, s, s, 0, 6)
        g += 150
        # painted in the reader's label order (lungs, heart, clavicles): later structures win
        for organ, val in (("right lung", 60), ("left lung", 60), ("heart", 200), ("right clavicle", 235), ("left clavicle", 235)):
            g[m[organ]] = val + g[m[organ]] - 150
        film = np.kron(np.clip(g, 0, 255), np.ones((2, 2), np.float32))
        raw = (4095 - np.round(film / 255.0 * 4095)).astype(">u2")  # stored inverted, as JSRT films are
        raw.tofile(out / "All247images" / f"{name}.IMG")
        fold = "fold1" if k % 2 == 0 else "fold2"
        for organ in organs:
            _save_mask(m[organ], out / "SCR" / fold / "masks" / organ / f"{name}.gif")
