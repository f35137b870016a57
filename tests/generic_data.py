"""Tiny generated datasets and task folders for the generic-reader, plugin and scaffold tests
(no tests here). Images are 16-24 px with learnable structure, so a run can also beat its baseline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from lvmbench.spec import TaskSpec

TINT = {"nevus": (150, 95, 60), "melanoma": (40, 30, 35), "keratosis": (175, 155, 120)}


def lesion_image(rng: np.random.Generator, dx: str, size: int = 20) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size, 3), (230, 200, 185), np.float32) + rng.normal(0, 6, (size, size, 3))
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2
    img[blob] = np.array(TINT[dx]) + rng.normal(0, 6, (int(blob.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_derm(root: Path, lesions: int = 24, per_lesion: int = 2, seed: int = 0, table: str = "metadata.csv") -> Path:
    """HAM10000-like: ``images_part_{1,2}/ISIC_n.jpg`` + a metadata table (lesion_id, image_id, dx, split)."""
    rng = np.random.default_rng(seed)
    codes = {"nevus": "nv", "melanoma": "mel", "keratosis": "bkl"}
    rows, n = [], 0
    for lesion in range(lesions):
        dx = list(TINT)[lesion % 3]
        split = "test" if lesion % 4 == 3 else "train"
        for _ in range(per_lesion):
            name = f"ISIC_{n:05d}"
            folder = root / f"images_part_{1 + n % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lesion_image(rng, dx)).save(folder / f"{name}.png")
            rows.append({"lesion_id": f"HAM_{lesion:04d}", "image_id": name, "dx": codes[dx], "split": split})
            n += 1
    write_rows(root / table, rows)
    return root


def write_rows(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".xlsx":
        import pandas as pd

        pd.DataFrame(rows).to_excel(path, index=False)
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
        w.writeheader()
        w.writerows(rows)


def write_frames(root: Path, sequences: int = 4, per_seq: int = 6, seed: int = 0, image_dir: str = "frames", mask_dir: str = "labels", size: int = 24, ext: str = ".png") -> Path:
    """A polyp video set: frames ``1.png .. N.png`` numbered across sequences, masks beside them
    (``ext=".tif"``: TIFF frames and masks, as CVC-ClinicDB ships them)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    frame = 0
    for seq in range(sequences):
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        for _ in range(per_seq):
            frame += 1
            mask = (yy - cy - rng.integers(-1, 2)) ** 2 + (xx - cx - rng.integers(-1, 2)) ** 2 < (size // 5 + seq % 2) ** 2
            img = np.full((size, size, 3), (150, 70, 60), np.float32) + rng.normal(0, 10, (size, size, 3))
            img[mask] = (225, 165, 145)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / image_dir / f"{frame}{ext}")
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / mask_dir / f"{frame}{ext}")
    return root


def write_task(tasks: Path, text: str) -> Path:
    """``tasks/<id>/task.yaml`` from YAML text; returns the file."""
    raw = yaml.safe_load(text)
    folder = tasks / raw["id"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def spec_of(text: str, folder: Path | None = None) -> TaskSpec:
    spec = TaskSpec.model_validate(yaml.safe_load(text))
    spec.folder = folder
    return spec


DERM_TASK = """\
id: derm_dx
title: dermoscopy diagnosis from a metadata table
family: classification
modality: dermoscopy
classes: [nevus, melanoma, keratosis]
data:
  reader: manifest
  dir: derm
  options:
    table: metadata.csv
    image: "images_part_*/{image_id}.png"
    label: dx
    label_map: {nv: nevus, mel: melanoma, bkl: keratosis}
    group: {column: lesion_id}
    split: split
split: {source: publisher, map: {train: train, test: test}, val: 0.25, seed: 0, group_by: patient}
preprocess: {size: 16}
protocols:
  knn: {ks: [3]}
  linear: {epochs: 3, batch_size: 8, lrs: [0.01]}
default_protocols: [knn, linear]
primary_metric: accuracy
metrics: [accuracy, balanced_accuracy]
suites: [derm-extra]
"""

POLYP_TASK = """\
id: polyp_seq
title: polyp frames grouped by video sequence (frame-number ranges)
family: segmentation
modality: endoscopy
classes: [background, polyp]
data:
  reader: paired_images
  dir: polyp
  options:
    images: frames/*.png
    masks: "labels/{stem}.png"
    id: "{stem}"
    group:
      input: "{stem}"
      ranges:
        - {from: 1, to: 6, group: seq1}
        - {from: 7, to: 12, group: seq2}
        - {from: 13, to: 18, group: seq3}
        - {from: 19, to: 24, group: seq4}
split: {source: rule, val: 0.25, test: 0.25, seed: 0, stratify: false, group_by: patient}
preprocess: {size: 16, channels: 3, intensity: raw255, resize: nearest}
protocols:
  seg2d: {lr: 0.001, epochs: 2, batch_size: 4, eval_batch_size: 8, hd95: false}
primary_metric: dice
suites: [polyp-extra]
"""


def write_case_folders(root: Path, variant: str, n: int = 8, seed: int = 0, size: int = 24) -> Path:
    """One folder per case, ``root/caseNN/...``: ``fixed`` (image.png + mask.png), ``named``
    (caseNN.png + caseNN_mask.png), ``subfolders`` (images/caseNN.png + masks/<one file per object>.png)
    or ``volumes`` (imaging.nii.gz + segmentation.nii.gz, KiTS-style)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        case = root / f"case{i:02d}"
        case.mkdir(parents=True, exist_ok=True)
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 5) ** 2
        img = np.full((size, size, 3), (150, 70, 60), np.float32) + rng.normal(0, 12, (size, size, 3))
        img[mask] = (225, 165, 145)
        img8 = np.clip(img, 0, 255).astype(np.uint8)
        if variant == "volumes":
            import nibabel as nib

            vol = np.stack([img8[..., 0].astype(np.float32)] * 4, axis=2)
            lab = np.stack([mask.astype(np.uint8)] * 4, axis=2)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(case / "imaging.nii.gz"))
            nib.save(nib.Nifti1Image(lab, np.eye(4)), str(case / "segmentation.nii.gz"))
            continue
        if variant == "fixed":
            Image.fromarray(img8).save(case / "image.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(case / "mask.png")
        elif variant == "named":
            Image.fromarray(img8).save(case / f"{case.name}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(case / f"{case.name}_mask.png")
        else:  # subfolders: the mask split into two object files under masks/
            (case / "images").mkdir(exist_ok=True)
            (case / "masks").mkdir(exist_ok=True)
            Image.fromarray(img8).save(case / "images" / f"{case.name}.png")
            left = mask & (xx < cx)
            for k, part in enumerate((left, mask & ~left)):
                Image.fromarray(part.astype(np.uint8) * 255).save(case / "masks" / f"obj{rng.integers(1000, 9999)}_{k}.png")
    return root
