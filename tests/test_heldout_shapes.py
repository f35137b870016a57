"""Issue 28's three held-out dataset shapes, as their authors would add them, with YAML only: a
dermoscopy CSV with legend rows (``task new``), colonoscopy TIFF frames and masks grouped into video
sequences (``task new``, then ``group_by: sequence`` by hand) and a MedMNIST-style ``.npz`` with a
published table (a hand-written task.yaml whose ``reported`` row carries ACC and AUC). Each goes from
its task file through ``eval`` to ``leaderboard``, where the paper's ACC stands beside ours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import cli
from generic_data import write_derm, write_frames

from lvmbench.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")

BREAST_TASK = """\
id: breastmnist_r18
title: BreastMNIST (MedMNIST v2, 28 px), ResNet-18 trained end to end, as in the paper's table
family: classification
modality: ultrasound
classes: [malignant, normal_benign]
data: {reader: medmnist, dir: medmnist, options: {file: breastmnist.npz}}
split: {source: publisher, map: {train: train, val: val, test: test}, group_by: case}
preprocess: {size: 28, channels: 3, intensity: imagenet}
protocols:
  finetune: {epochs: 3, batch_size: 32, lr: 0.001, heads: [linear]}
primary_metric: auc
metrics: [auc, accuracy]
reported:
  - {encoder: ResNet-18 (28) paper, protocol: finetune, metrics: {auc: 0.901, accuracy: 0.863}, unit: fraction, source: "MedMNIST v2, Table 3"}
reported_suite: medmnist-v2
suites: [medmnist-v2]
"""


def _breast_npz(path: Path, seed: int = 0) -> None:
    """A BreastMNIST-shaped file: 28 px grey images, labels (N, 1), train/val/test arrays."""
    rng = np.random.default_rng(seed)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, (2 if label else 14):(14 if label else 26), 6:22] += 150  # a bright band, top or bottom
        return x, y[:, None].astype(np.uint8)

    arrays = {}
    for name, n in (("train", 70), ("val", 20), ("test", 30)):
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = part(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tmp_path / "tasks"))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))
    TASKS.reset()
    yield tmp_path
    TASKS.reset()


def _fresh_catalog() -> None:
    TASKS.reset()


def _eval(monkeypatch, capsys, env: Path, suite: str, *extra: str) -> tuple[int, str]:
    _fresh_catalog()
    code, out, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--suite", suite, "--data-root", str(env / "data"), "--results", str(env / "results"),
                         "--cache-dir", str(env / "cache"), "--workers", "0", "--no-progress", *extra)
    return code, out + err


def test_three_held_out_shapes_from_task_files_to_the_leaderboard(env, monkeypatch, capsys):
    data = env / "data"
    # 1. dermoscopy labels in a CSV whose last rows are a legend ------------------------------------
    derm = write_derm(data / "derm", lesions=16)
    with open(derm / "metadata.csv", "a", encoding="utf-8") as f:
        f.write(',,,\nLegend: dx codes,,"nv = nevus, mel = melanoma, bkl = keratosis",\n,,"Nodules, Streaks, Regr",\n')
    code, out, err = cli(monkeypatch, capsys, "task", "new", "derm_legend", "--family", "classification", "--from", str(derm), "--out", str(env / "tasks"))
    assert code == 0 and "legend/footer" in out + err and "ERROR" not in out + err, out + err
    assert yaml.safe_load((env / "tasks" / "derm_legend" / "task.yaml").read_text(encoding="utf-8"))["classes"] == ["bkl", "mel", "nv"]
    code, text = _eval(monkeypatch, capsys, env, "derm-legend-quick", "--protocol", "knn,linear", "--head", "linear")
    assert code == 0 and "2 done" in text and "0 failed" in text, text

    # 2. TIFF frames and masks, frames grouped into video sequences --------------------------------
    polyp = write_frames(data / "cvc", sequences=4, per_seq=6, ext=".tif")
    code, out, err = cli(monkeypatch, capsys, "task", "new", "cvc_seq", "--family", "segmentation", "--from", str(polyp), "--out", str(env / "tasks"))
    assert code == 0 and "ERROR" not in out + err, out + err
    path = env / "tasks" / "cvc_seq" / "task.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["data"]["options"]["masks"] == "labels/{stem}.tif"
    raw["data"]["options"]["group"] = {"input": "{stem}", "name": "sequence", "ranges": [{"from": 6 * s + 1, "to": 6 * s + 6, "group": f"seq{s + 1}"} for s in range(4)]}
    raw["split"]["group_by"] = "sequence"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    _fresh_catalog()
    code, out, err = cli(monkeypatch, capsys, "data", "verify", "cvc_seq", "--suite", "cvc-seq", "--data-root", str(data), "--no-progress")
    assert code == 0 and "ready" in out, out + err
    code, text = _eval(monkeypatch, capsys, env, "cvc-seq-quick")
    assert code == 0 and "1 done" in text, text
    rec = json.loads(next((env / "results" / "cvc-seq-quick").rglob("seg2d-s0.json")).read_text(encoding="utf-8"))
    assert rec["hyperparameters"]["drop_last"] is False and rec["hyperparameters"]["augment"] is False
    # sequences stayed whole: no sequence in two split parts
    from lvmbench.data.task_data import load_task_data
    from lvmbench.tasks import get_task

    _fresh_catalog()
    split = load_task_data(get_task("cvc_seq").for_suite("cvc-seq"), data).split
    parts = {s: {c.group for c in split[s]} for s in ("train", "val", "test")}
    assert parts["train"] and not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"]) and not (parts["val"] & parts["test"])

    # 3. an npz classification task with a published table: ACC and AUC -----------------------------
    _breast_npz(data / "medmnist" / "breastmnist.npz")
    (env / "tasks" / "breastmnist_r18").mkdir(parents=True)
    (env / "tasks" / "breastmnist_r18" / "task.yaml").write_text(BREAST_TASK, encoding="utf-8")
    code, text = _eval(monkeypatch, capsys, env, "medmnist-v2")
    assert code == 0 and "1 done" in text, text
    rec = json.loads(next((env / "results" / "medmnist-v2").rglob("finetune-s0.json")).read_text(encoding="utf-8"))
    assert rec["timings"]["train_images"] == 3 * 70 and rec["timings"]["train_steps"] == 3 * 3  # every image each epoch (70 at batch 32: 32, 32, 6; before: 64)
    assert [h["lr"] for h in rec["extra"]["val_history"]] == [0.001] * 3
    ours = rec["metrics"]["accuracy"]

    # the leaderboard: the paper's ACC beside ours ---------------------------------------------------
    _fresh_catalog()
    code, out, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(env / "results"), "--out", str(env / "lb" / "leaderboard.md"), "--metric", "accuracy")
    assert code == 0, out + err
    md = (env / "lb" / "leaderboard.md").read_text(encoding="utf-8")
    for task in ("derm_legend", "cvc_seq", "breastmnist_r18"):
        assert task in md, task
    table = md[md.index("#### Classification — medmnist-v2, in accuracy"):].split("\n\n")[2].splitlines()  # heading, note, table
    assert any(ln.startswith("| ResNet-18 (28) paper (reported) | finetune") and "| 86.30" in ln for ln in table), table
    assert any(ln.startswith("| resnet18 (random-init)") and f"| {100 * ours:.2f} [" in ln for ln in table), table
