"""`lvmbench data verify` and the pre-run check: every fault named once, runs refuse broken data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import shared
from PIL import Image

from lvmbench.data.task_data import load_task_data
from lvmbench.data.verify import preflight, verify_task
from lvmbench.errors import DataError
from lvmbench.spec import TaskSpec

KVASIR_TASK = """
id: dmg_kvasir
title: damaged Kvasir copy
family: segmentation
modality: endoscopy
classes: [background, polyp]
data: {reader: kvasir_seg, dir: kvasir, expected: {cases: N}}
split: {source: rule, val: 0.25, test: 0.25, stratify: false, group_by: case}
preprocess: {size: 32, channels: 3, intensity: raw255}
protocols: {seg2d: {epochs: 1, batch_size: 4}}
primary_metric: dice
"""

HIPPO_TASK = """
id: dmg_hippo
title: damaged hippocampus copy
family: segmentation
dims: 3d-slicewise
modality: MRI
classes: [background, anterior, posterior]
data: {reader: decathlon, dir: hippo, options: {images: "images/*.nii.gz", label: "labels/{vol}.nii.gz"}, expected: {cases: N}}
split: {source: rule, val: 0.25, test: 0.25, stratify: false, group_by: volume}
preprocess: {size: 32, channels: 1, intensity: raw255}
protocols: {seg3d: {epochs: 1, batch_size: 8, volume_norm: percentile}}
primary_metric: iou3d
"""


def write_task(tasks: Path, text: str, n: int) -> TaskSpec:
    raw = yaml.safe_load(text.replace("cases: N", f"cases: {n}"))
    folder = tasks / raw["id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    spec = TaskSpec.model_validate(raw)
    spec.folder = folder
    return spec


def kvasir_copy(src: Path, dst: Path, n: int) -> list[str]:
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    names = sorted(p.name for p in (src / "images").glob("*.jpg"))[:n]
    for name in names:
        shutil.copy(src / "images" / name, dst / "images" / name)
        shutil.copy(src / "masks" / name, dst / "masks" / name)
    return names


def damage_kvasir(root: Path, names: list[str]) -> dict[str, str]:
    """Truncate an image, delete a mask, resize a mask; returns file -> expected problem."""
    img = root / "images" / names[0]
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 3])
    (root / "masks" / names[1]).unlink()
    mask = root / "masks" / names[2]
    with Image.open(mask) as m:
        m.convert("L").resize((m.width // 2, m.height // 2)).save(mask, quality=95)
    return {str(img): "unreadable or truncated", str(root / "images" / names[1]): "without its mask", str(root / "images" / names[2]): "differ in size"}


def hippo_copy(dst: Path, n: int, nan_in: int | None) -> Path | None:
    import nibabel as nib

    (dst / "images").mkdir(parents=True)
    (dst / "labels").mkdir()
    rng = np.random.default_rng(0)
    bad = None
    for i in range(n):
        vol = rng.normal(100, 20, (12, 14, 10)).astype(np.float32)
        lab = np.zeros(vol.shape, np.uint8)
        lab[3:7, 4:9, 2:6] = 1
        lab[7:10, 4:9, 2:6] = 2
        if i == nan_in:
            vol[2:4, 2:4, 2:4] = np.nan
            bad = dst / "images" / f"hippocampus_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.eye(4)), dst / "images" / f"hippocampus_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), dst / "labels" / f"hippocampus_{i:03d}.nii.gz")
    return bad


def test_clean_synthetic_task_verifies(synth_root):
    from lvmbench.tasks import get_task

    report = verify_task(get_task("retinamnist_linear").for_suite("smoke"), synth_root, "smoke", progress=False)
    assert report.runnable and report.issues == [] and report.cases == 110
    assert report.split_counts == {"train": 60, "val": 20, "test": 30}


def test_counts_against_expected(tmp_path, synth_root):
    names = kvasir_copy(synth_root / "Kvasir-SEG", tmp_path / "kvasir", 6)
    spec = write_task(tmp_path / "tasks", KVASIR_TASK, 8)
    report = verify_task(spec, tmp_path, progress=False)
    assert [i.problem for i in report.fatal] == ["6 cases, expected 8"]
    spec.data.expected = {"cases": 5, "images": 1}
    report = verify_task(spec, tmp_path, progress=False)
    assert report.runnable and sorted(i.problem.split(" (")[0].split(",")[0] for i in report.warnings) == ["6 cases", "data.expected has 'images'"]
    assert names


def test_damaged_copy_every_fault_named_and_the_run_refuses(tmp_path, synth_root, cache_dir):
    """The user's path: a task folder, `data verify`, then `eval`, as subprocesses."""
    names = kvasir_copy(synth_root / "Kvasir-SEG", tmp_path / "data" / "kvasir", 8)
    faults = damage_kvasir(tmp_path / "data" / "kvasir", names)
    nan_vol = hippo_copy(tmp_path / "data" / "hippo", 4, nan_in=1)
    faults[str(nan_vol)] = "NaN/inf values"
    write_task(tmp_path / "tasks", KVASIR_TASK, 8)
    write_task(tmp_path / "tasks", HIPPO_TASK, 4)
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(tmp_path / "tasks"), "LVMBENCH_SPLITS": str(tmp_path / "splits"), "LVMBENCH_CACHE": str(cache_dir)}
    cli = [sys.executable, "-m", "lvmbench.cli"]
    v = subprocess.run([*cli, "data", "verify", "dmg_kvasir", "dmg_hippo", "--data-root", str(tmp_path / "data"), "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert v.returncode == 1, v.stdout + v.stderr
    assert "Traceback" not in v.stderr
    lines = [ln.split("  ", 2)[-1].strip() for ln in v.stdout.splitlines() if ln.startswith("  ERROR") or ln.startswith("  warning")]
    for path, problem in faults.items():
        assert any(ln.startswith(path) and problem in ln for ln in lines), (path, problem, v.stdout)
    assert any("7 cases, expected 8" in ln for ln in lines)
    assert v.stdout.count("CANNOT RUN") == 2

    e = subprocess.run(
        [*cli, "eval", "--encoder", "resnet18", "--tasks", "dmg_kvasir,dmg_hippo", "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "r"), "--no-progress", "--workers", "0"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert e.returncode == 1 and "Traceback" not in e.stderr, e.stderr
    for line in lines:  # every line verify printed is in the run's log, word for word
        assert line in e.stderr, (line, e.stderr)
    fail = [ln for ln in e.stderr.splitlines() if ln.startswith("FAIL")]
    assert len(fail) == 2 and all("fix:" in ln for ln in fail)
    assert not list((tmp_path / "r").rglob("*.json")), "no result for a task with broken data"


def test_real_damaged_sample(tmp_path):
    """The same faults on copies of real files (Kvasir JPEGs, Decathlon NIfTI)."""
    src = shared("kvasir_seg")
    names = kvasir_copy(src, tmp_path / "kvasir", 5)
    faults = damage_kvasir(tmp_path / "kvasir", names)
    hsrc = shared("hippocampus_3d")
    (tmp_path / "hippo" / "images").mkdir(parents=True)
    (tmp_path / "hippo" / "labels").mkdir()
    for name in ("hippocampus_001.nii.gz", "hippocampus_003.nii.gz", "hippocampus_004.nii.gz"):
        shutil.copy(hsrc / "images" / name, tmp_path / "hippo" / "images" / name)
        shutil.copy(hsrc / "labels" / name, tmp_path / "hippo" / "labels" / name)
    import nibabel as nib

    bad = tmp_path / "hippo" / "images" / "hippocampus_003.nii.gz"
    img = nib.load(bad)
    vol = np.asarray(img.dataobj).astype(np.float32)
    vol[0, 0, :] = np.nan
    nib.save(nib.Nifti1Image(vol, img.affine, img.header), bad)
    faults[str(bad)] = "NaN/inf values"
    found = []
    for text, n in ((KVASIR_TASK, 5), (HIPPO_TASK, 3)):
        report = verify_task(write_task(tmp_path / "tasks", text, n), tmp_path, progress=False)
        assert not report.runnable
        found += [i.line() for i in report.issues]
    for path, problem in faults.items():
        assert any(ln.startswith(path) and problem in ln for ln in found), (path, problem, found)


def test_preflight_checks_each_file_once_until_it_changes(tmp_path, synth_root, monkeypatch):
    from lvmbench.data.readers.medmnist import MedMNIST
    from lvmbench.tasks import get_task

    shutil.copytree(synth_root / "medmnist", tmp_path / "medmnist")
    spec = get_task("retinamnist_linear").for_suite("smoke")
    calls = {"n": 0}
    orig = MedMNIST.load_image

    def counting(self, case):
        calls["n"] += 1
        return orig(self, case)

    monkeypatch.setattr(MedMNIST, "load_image", counting)
    data = load_task_data(spec, tmp_path)
    preflight(data, tmp_path / "cache", log=lambda s: None)
    assert calls["n"] == 110
    preflight(load_task_data(spec, tmp_path), tmp_path / "cache", log=lambda s: None)
    assert calls["n"] == 110, "unchanged files are not decoded again"
    # a changed file (new mtime) is checked again: here it now has a label outside the classes
    with np.load(tmp_path / "medmnist" / "retinamnist.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test_labels"][0] = 7
    np.savez_compressed(tmp_path / "medmnist" / "retinamnist.npz", **arrays)
    logged: list[str] = []
    with pytest.raises(DataError, match=r"retinamnist.npz: label 7 is outside the task's 5 classes"):
        preflight(load_task_data(spec, tmp_path), tmp_path / "cache", log=logged.append)
    assert calls["n"] == 220 and any("label 7" in s for s in logged)


def test_identical_images_across_split_parts_are_reported(tmp_path, synth_root):
    from lvmbench.tasks import get_task

    shutil.copytree(synth_root / "BrainTumor", tmp_path / "BrainTumor")
    src = tmp_path / "BrainTumor" / "Testing" / "glioma_tumor" / "image(1).jpg"
    shutil.copy(src, tmp_path / "BrainTumor" / "Training" / "glioma_tumor" / "copy.jpg")
    spec = get_task("brain_tumor_linear").for_suite("smoke")
    spec.data.expected = {}
    report = verify_task(spec, tmp_path, progress=False)
    (dup,) = [i for i in report.issues if "identical image" in i.problem]
    assert not dup.fatal and "image(1).jpg" in dup.line() and "copy.jpg" in dup.line()


def test_data_status_is_cheap_and_says_what_is_missing(tmp_path, synth_root):
    from lvmbench.data.status import data_status
    from lvmbench.tasks import get_task

    spec = get_task("retinamnist_linear").for_suite("smoke")
    assert data_status(spec, synth_root, "smoke") == "ready (110 cases)"
    assert data_status(spec, tmp_path, "smoke") == "missing medmnist/"
    assert data_status(spec, None, "smoke") == "no --data-root"
    (tmp_path / "medmnist").mkdir()
    assert data_status(spec, tmp_path, "smoke").startswith("error: ") and "MedMNIST file not found" in data_status(spec, tmp_path, "smoke")
    real = get_task("retinamnist_linear").for_suite("shared-data")
    assert data_status(real, shared("medmnist").parent, "shared-data") == "ready (1600 cases)"
