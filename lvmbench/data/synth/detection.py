"""Synthetic detection datasets in their publishers' layouts: VinDr-CXR (DICOM + train.csv with
several radiologists per finding, "No finding" rows), Kvasir-SEG (images, masks, kavsir_bboxes.json)
and Pascal VOC (BCCD-style blood cells, ImageSets split, one degenerate box).

Every box surrounds a drawn object whose look depends on its class, so a detector that learns
anything beats random boxes within a few epochs at 64-128 px.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from lvmbench.data.synth import SYNTH
from lvmbench.data.synth.draw import disk, ellipse, noisy_background, tint, to_uint8

VINDR_CLASSES = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
)
# The synthetic X-rays draw four of the fourteen findings, each with its own look and place.
VINDR_DRAWN = {"Aortic enlargement": 0, "Cardiomegaly": 3, "Nodule/Mass": 8, "Pleural effusion": 10}


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _chest(rng: np.random.Generator, size: int, healthy: bool = False) -> tuple[np.ndarray, list[tuple[str, tuple[float, float, float, float]]]]:
    s = size
    img = noisy_background(rng, s, s, 30, 5)
    img[ellipse(s, s, s * 0.5, s * 0.5, s * 0.46, s * 0.42)] += 60  # body
    for cx in (0.3, 0.7):
        img[ellipse(s, s, s * 0.48, s * cx, s * 0.3, s * 0.15)] -= 45  # lungs
    findings = []
    kinds = [k for k in VINDR_DRAWN if rng.random() < 0.45] or [str(rng.choice(list(VINDR_DRAWN)))]
    if healthy:
        kinds = []
    for kind in kinds:
        if kind == "Cardiomegaly":
            m = ellipse(s, s, s * 0.62, s * rng.uniform(0.45, 0.55), s * rng.uniform(0.14, 0.18), s * rng.uniform(0.2, 0.26))
            img[m] += 70
        elif kind == "Aortic enlargement":
            m = disk(s, s, s * 0.3, s * rng.uniform(0.48, 0.56), s * rng.uniform(0.07, 0.1))
            img[m] += 110
        elif kind == "Nodule/Mass":
            cy, cx = s * rng.uniform(0.3, 0.6), s * rng.choice([0.28, 0.72]) + rng.uniform(-3, 3)
            m = disk(s, s, cy, cx, s * rng.uniform(0.05, 0.08))
            img[m] += 140
        else:  # pleural effusion: a bright meniscus filling the bottom of one lung
            cx = rng.choice([0.3, 0.7])
            m = ellipse(s, s, s * 0.48, s * cx, s * 0.3, s * 0.15) & (np.mgrid[:s, :s][0] > s * rng.uniform(0.6, 0.68))
            img[m] += 90
        findings.append((kind, _box_of(m)))
    return to_uint8(img), findings


def _write_dicom(path: Path, pixels: np.ndarray, uid_seed: str, monochrome1: bool) -> None:
    # 12-bit data as in radiographs; MONOCHROME1 files store the inverted values.
    data = pixels.astype(np.uint16) * 16
    if monochrome1:
        data = 4095 - data
    uid = generate_uid(entropy_srcs=[uid_seed])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.Modality = "DX"
    ds.Rows, ds.Columns = data.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = data.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_vindr(out: Path, rng: np.random.Generator, n: int = 90, size: int = 128, variant: str = "dicom") -> None:
    """``train/<id>.dicom`` + ``train.csv`` (``variant='png'``: the Kaggle export, images resized to
    ``size // 2`` px and ``width``/``height`` columns giving the original size the boxes refer to)."""
    img_dir = out / "train"
    img_dir.mkdir(parents=True)
    cols = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    if variant == "png":
        cols += ["width", "height"]
    rows: list[list] = []
    for i in range(n):
        iid = f"{int(rng.integers(16**11, 16**12)):012x}{i:04d}"
        negative = i % 9 == 4  # about one image in nine has only "No finding" rows
        pixels, findings = _chest(rng, size, healthy=negative)
        rads = [f"R{k}" for k in rng.choice(np.arange(1, 18), 3, replace=False)]
        extra = [size, size] if variant == "png" else []
        if not findings:
            rows += [[iid, "No finding", 14, r, "", "", "", "", *extra] for r in rads]
        for kind, (x1, y1, x2, y2) in findings:
            for r in rads[: int(rng.integers(1, 4))]:  # 1-3 radiologists mark each finding, with jitter
                j = rng.normal(0, size * 0.015, 4)
                box = np.clip([x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3]], 0, size).round(1)
                rows.append([iid, kind, VINDR_DRAWN[kind], r, *box.tolist(), *extra])
        if variant == "png":
            Image.fromarray(pixels).resize((size // 2, size // 2), Image.BILINEAR).save(img_dir / f"{iid}.png")
        else:
            _write_dicom(img_dir / f"{iid}.dicom", pixels, iid, monochrome1=i % 4 == 1)
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)


@SYNTH.register("VinDr-CXR")
def vindr(out: Path, rng: np.random.Generator) -> None:
    write_vindr(out, rng)


def _polyp_frame(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float, float, float]]]:
    img = noisy_background(rng, h, w, 150, 8)
    yy, xx = np.mgrid[:h, :w]
    img += 40 * np.cos(xx / w * 3 + rng.uniform(0, 6)) * np.sin(yy / h * 2)  # mucosal shading
    mask = np.zeros((h, w), bool)
    boxes = []
    for _ in range(1 if rng.random() < 0.85 else 2):
        for _attempt in range(10):
            r = min(h, w) * rng.uniform(0.12, 0.25)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            m = ellipse(h, w, cy, cx, r * rng.uniform(0.8, 1.2), r, rng.uniform(0, np.pi))
            if not (m & mask).any():
                break
        img[m] -= 70  # darker, redder polyp
        img[disk(h, w, cy - r * 0.3, cx - r * 0.3, r * 0.25)] += 60  # specular highlight
        mask |= m
        boxes.append(_box_of(m))
    return tint(img, (1.0, 0.55, 0.5)), mask, boxes


@SYNTH.register("Kvasir-SEG-boxes")
def kvasir(out: Path, rng: np.random.Generator, n: int = 60) -> None:
    """Kvasir-SEG layout: ``images/<id>.jpg``, ``masks/<id>.jpg`` and ``kavsir_bboxes.json``."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    meta = {}
    for i in range(n):
        h, w = int(rng.integers(80, 129)), int(rng.integers(96, 161))  # Kvasir sizes vary per image
        img, mask, boxes = _polyp_frame(rng, h, w)
        key = f"cju{int(rng.integers(36**8, 36**9)):x}{i:03d}"
        Image.fromarray(img).save(out / "images" / f"{key}.jpg", quality=95)
        Image.fromarray((mask * 255).astype(np.uint8)).convert("RGB").save(out / "masks" / f"{key}.jpg", quality=95)
        bb = [{"label": "polyp", "xmin": int(b[0]), "ymin": int(b[1]), "xmax": int(b[2]), "ymax": int(b[3])} for b in boxes]
        meta[key] = {"height": h, "width": w, "bbox": bb}
    (out / "kavsir_bboxes.json").write_text(json.dumps(meta), encoding="utf-8")


BCCD_CLASSES = ("WBC", "RBC", "Platelets")


def _smear(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[tuple[str, tuple[float, float, float, float]]]]:
    img = noisy_background(rng, h, w, 200, 6)
    objs = []
    taken = np.zeros((h, w), bool)

    def place(r: float) -> tuple[float, float] | None:
        for _ in range(20):
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            if not taken[disk(h, w, cy, cx, r + 1)].any():
                return cy, cx
        return None

    if rng.random() < 0.9:  # WBC: one large dark nucleus with a halo
        r = min(h, w) * rng.uniform(0.14, 0.18)
        if (p := place(r)) is not None:
            m = disk(h, w, *p, r)
            img[m] -= 60
            img[disk(h, w, *p, r * 0.6)] -= 70
            taken |= m
            objs.append(("WBC", _box_of(m)))
    for _ in range(int(rng.integers(3, 7))):  # RBC: pale rings
        r = min(h, w) * rng.uniform(0.08, 0.1)
        if (p := place(r)) is not None:
            m = disk(h, w, *p, r)
            img[m] -= 35
            img[disk(h, w, *p, r * 0.5)] += 15
            taken |= m
            objs.append(("RBC", _box_of(m)))
    for _ in range(int(rng.integers(0, 3))):  # platelets: small dark dots
        r = min(h, w) * 0.035
        if (p := place(r)) is not None:
            m = disk(h, w, *p, r)
            img[m] -= 90
            taken |= m
            objs.append(("Platelets", _box_of(m)))
    return tint(img, (0.95, 0.8, 0.9)), objs


def write_voc(out: Path, rng: np.random.Generator, n: int = 60, h: int = 96, w: int = 128) -> None:
    ann, jpg, sets = out / "Annotations", out / "JPEGImages", out / "ImageSets" / "Main"
    for d in (ann, jpg, sets):
        d.mkdir(parents=True)
    ids = [f"BloodImage_{i:05d}" for i in range(n)]
    for k, iid in enumerate(ids):
        img, objs = _smear(rng, h, w)
        Image.fromarray(img).save(jpg / f"{iid}.jpg", quality=95)
        xml = [f"<annotation><folder>JPEGImages</folder><filename>{iid}.jpg</filename>",
               f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>0</segmented>"]
        for name, (x1, y1, x2, y2) in objs:  # VOC stores 1-based inclusive pixel indices
            xml.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
                       f"<bndbox><xmin>{int(x1) + 1}</xmin><ymin>{int(y1) + 1}</ymin><xmax>{int(x2)}</xmax><ymax>{int(y2)}</ymax></bndbox></object>")
        if k == 3:  # one degenerate box, as in the real BCCD (xmax == xmin): readers must drop and report it
            xml.append("<object><name>RBC</name><difficult>0</difficult><bndbox><xmin>50</xmin><ymin>40</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>")
        xml.append("</annotation>")
        (ann / f"{iid}.xml").write_text("\n".join(xml), encoding="utf-8")
    order = rng.permutation(n)
    n_test, n_val = n // 5, n // 5
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    parts["trainval"] = np.concatenate([parts["train"], parts["val"]])
    for name, idx in parts.items():
        (sets / f"{name}.txt").write_text("".join(f"{ids[i]}\n" for i in sorted(idx)), encoding="utf-8")


@SYNTH.register("BCCD")
def bccd(out: Path, rng: np.random.Generator) -> None:
    write_voc(out, rng)
