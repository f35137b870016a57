"""Builders of result records for the statistics and leaderboard tests (no tests here).

The records are what a protocol would write, made directly, so the statistics are exercised on
many controlled inputs without training anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lvmbench.results import write_result
from lvmbench.spec import CaseScore, ResultRecord, RunUnit


def cls_records(labels: np.ndarray, prob: np.ndarray, groups: list[str], split: str = "test") -> list[dict[str, Any]]:
    pred = prob.argmax(axis=1)
    return [
        {"case": f"c{i:04d}", "group": groups[i], "split": split, "score": float(pred[i] == labels[i]), "label": int(labels[i]), "pred": int(pred[i]), "prob": [float(p) for p in prob[i]]}
        for i in range(len(labels))
    ]


def make_record(
    per_case: list[dict[str, Any]],
    metric: str,
    *,
    encoder: str = "resnet18",
    sha: str = "random-init",
    task: str = "brain_tumor_linear",
    protocol: str = "linear",
    seed: int = 0,
    fraction: float = 1.0,
    suite: str = "smoke",
    primary: float | None = None,
    family: str = "classification",
) -> ResultRecord:
    if primary is None:
        from lvmbench.metrics.bootstrap import weighted_metric

        primary = float(weighted_metric(metric, per_case, np.ones((1, len(per_case))))[0][0]) if per_case else 0.0
    unit = RunUnit(suite=suite, task_id=task, protocol=protocol, encoder=encoder, weights_sha256=sha, seed=seed, label_fraction=fraction)
    return ResultRecord(
        unit=unit,
        task_version=1,
        family=family,
        primary_metric=metric,
        primary=primary,
        metrics={metric: primary},
        per_case=[CaseScore.model_validate(r) for r in per_case],
        split_hash="h",
        device="cpu",
        started_at="2024-01-01T00:00:00+00:00",
        finished_at="2024-01-01T00:00:01+00:00",
    )


def write_records(results: Path, records: list[ResultRecord]) -> None:
    for r in records:
        write_result(results, r)


# ---------------------------------------------------------------- tiny tasks for end-to-end runs
#
# The catalogue, crash, determinism and label-efficiency tests run the real CLI and runner on a
# task of their own (found through LVMBENCH_TASK_PATH or registered in-process): 16-pixel images,
# a few dozen cases, no expected counts, so each unit takes well under a second.

TINY_TASK = """\
id: {id}
title: tiny {reader} task for harness tests
family: classification
modality: synthetic
classes: {classes}
data: {{reader: {reader}, dir: {dir}, options: {options}}}
split: {split}
preprocess: {{size: 16}}
protocols:
  knn: {{ks: [3]}}
  linear: {{epochs: 3, batch_size: 8, lrs: [0.01]}}
  finetune: {{epochs: 2, batch_size: 8, lr: 0.001}}
default_protocols: [knn]
primary_metric: accuracy
metrics: [accuracy, auc]
suites: []
"""

CLASS_SPLIT = "{source: publisher, map: {Training: train, Testing: test}, val: 0.25, seed: 0, group_by: case}"


def tiny_task_dir(folder: Path, task_id: str, data_dir: str, reader: str = "class_folders") -> Path:
    """Write ``folder/<task_id>/task.yaml``; returns the folder (a LVMBENCH_TASK_PATH entry)."""
    if reader == "class_folders":
        text = TINY_TASK.format(id=task_id, reader=reader, dir=data_dir, classes="[a, b]", options="{splits: [Training, Testing]}", split=CLASS_SPLIT)
    else:  # fgadr: five grades from a CSV, rule split
        text = TINY_TASK.format(id=task_id, reader=reader, dir=data_dir, classes='["0", "1", "2", "3", "4"]', options="{}", split="{source: rule, val: 0.2, test: 0.3, seed: 0, group_by: case}")
    (folder / task_id).mkdir(parents=True, exist_ok=True)
    (folder / task_id / "task.yaml").write_text(text, encoding="utf-8")
    return folder


def _img(rng: np.random.Generator, cls: int, size: int = 20) -> np.ndarray:
    img = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
    h = size // 2
    if cls % 2 == 0:
        img[:h, :h] += 150
    else:
        img[h:, h:] += 150
    img[:, :, cls % 3] += np.uint8(30 * (cls // 2))
    return img


def write_class_folders(root: Path, n_train: int = 10, n_test: int = 6, seed: int = 0) -> Path:
    """``root/Training/{a,b}/*.png`` and ``root/Testing/{a,b}/*.png``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("Training", n_train), ("Testing", n_test)):
        for cls, name in enumerate(("a", "b")):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_img(rng, cls)).save(d / f"{name}{i:02d}.png")
    return root


def write_fgadr(root: Path, n: int = 30, seed: int = 0) -> Path:
    """FGADR layout: ``Original_Images/NNNN_x.png`` + ``DR_Seg_Grading_Label.csv``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "Original_Images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        grade = i % 5
        name = f"{i:04d}_x.png"
        Image.fromarray(_img(rng, grade)).save(root / "Original_Images" / name)
        rows.append(f"{name},{grade}")
    (root / "DR_Seg_Grading_Label.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


SEG_TASK = """\
id: {id}
title: tiny {reader} segmentation task for harness tests
family: segmentation
dims: {dims}
modality: synthetic
classes: [background, fg]
data: {{reader: {reader}, dir: {dir}, options: {options}}}
split: {{source: rule, val: 0.2, test: 0.3, seed: 0, stratify: false, group_by: {group_by}}}
preprocess: {{size: 16, channels: {channels}, intensity: raw255, resize: nearest}}
protocols:
  {protocol}: {{lr: 0.001, epochs: 1, batch_size: 4, eval_batch_size: 8}}
primary_metric: {metric}
suites: []
"""


def tiny_seg_task_dir(folder: Path, task_id: str, data_dir: str, dims: str = "2d") -> Path:
    if dims == "2d":
        text = SEG_TASK.format(id=task_id, reader="kvasir_seg", dims="2d", dir=data_dir, options='{images: images/*.png, masks: "masks/{name}", threshold: 128}', group_by="case", channels=3, protocol="seg2d", metric="dice")
    else:
        text = SEG_TASK.format(id=task_id, reader="decathlon", dims="3d-slicewise", dir=data_dir, options='{images: "images/*.nii.gz", label: "labels/{vol}.nii.gz", slice_axis: 2}', group_by="volume", channels=1, protocol="seg3d", metric="iou3d")
    (folder / task_id).mkdir(parents=True, exist_ok=True)
    (folder / task_id / "task.yaml").write_text(text, encoding="utf-8")
    return folder


def write_kvasir(root: Path, n: int = 10, seed: int = 0) -> Path:
    """Kvasir-SEG layout with PNGs: ``images/x.png`` and ``masks/x.png`` (a bright disc and its mask)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:20, :20]
    for i in range(n):
        cy, cx = rng.integers(6, 14, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < 16).astype(np.uint8) * 255
        img = np.repeat((rng.integers(0, 60, (20, 20)) + mask // 2).astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(img).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i:02d}.png")
    return root


def write_decathlon(root: Path, n: int = 6, seed: int = 0) -> Path:
    """Decathlon layout: ``images/vol_i.nii.gz`` and ``labels/vol_i.nii.gz`` (8x8x4 volumes)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = np.zeros((8, 8, 4), np.uint8)
        lab[2:5, 2:5, 1:3] = 1
        img = (rng.random((8, 8, 4)) * 50 + lab * 100).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "images" / f"vol_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labels" / f"vol_{i}.nii.gz"))
    return root



@contextlib.contextmanager
def task_folder(monkeypatch, tmp_path: Path, tasks: Path) -> Iterator[Path]:
    """lvmbench sees the task folders in ``tasks`` (and its own splits and cache under ``tmp_path``)
    for the block; the task registry is read afresh before and after."""
    from lvmbench.tasks import TASKS

    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tasks))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))
    monkeypatch.setenv("LVMBENCH_CACHE", str(tmp_path / "cache"))
    TASKS.reset()
    try:
        yield tmp_path
    finally:
        TASKS.reset()
