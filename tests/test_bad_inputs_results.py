"""Bad-input catalogue, round 2: arguments, result files, selection and interrupts.

Each case: one line naming the bad value or file and the fix, no traceback, nothing lost; numbers
that cannot be what lvmbench wrote are refused instead of shown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from builders import cls_records, make_record, tiny_seg_task_dir, tiny_task_dir, write_class_folders, write_kvasir, write_records
from cli_helpers import cli, eval_rt, the_line

from lvmbench.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")


ARGUMENTS = [
    (["--seeds", "12345678901234567890"], "--seeds"),
    (["--seeds", ""], "--seeds is empty"),
    (["--tasks", ""], "--tasks is empty"),
    (["--protocol", " , "], "--protocol is empty"),
    (["--head", ""], "--head is empty"),
    (["--device", "gpu"], "--device 'gpu'"),
    (["--workers", "-1"], "--workers -1"),
    (["--label-fraction", ""], "--label-fraction is empty"),
]


@pytest.mark.parametrize("extra,needle", ARGUMENTS, ids=[" ".join(a) or "empty" for a, _ in ARGUMENTS])
def test_bad_arguments_are_one_line(tiny, monkeypatch, capsys, extra, needle):
    # later options win in click: the bad value replaces the helper's own
    code, _, err = eval_rt(monkeypatch, capsys, tiny, *extra)
    assert code == 2
    line = the_line(err, needle)
    assert "fix:" in line
    assert not (tiny / "results").exists()


def test_cuda_without_a_gpu_is_one_line(tiny, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = eval_rt(monkeypatch, capsys, tiny, "--device", "cuda")
    assert code == 2 and "no usable CUDA device" in the_line(err, "--device cuda")


def test_lock_file_that_is_a_folder(tiny, monkeypatch, capsys):
    lock = tiny / "results" / "lvmmed" / "resnet18" / "random-init" / "rt" / "knn-s0.json.lock"
    lock.mkdir(parents=True)
    code, _, err = eval_rt(monkeypatch, capsys, tiny)
    assert code != 0 and "fix: remove it" in the_line(err, "lock file")


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d.update(primary=float("nan")), "primary is nan"),
    (lambda d: d.update(primary=1e308), "outside [0, 1]"),
    (lambda d: d["metrics"].update(accuracy=-3.0), "accuracy = -3"),
], ids=["nan", "huge", "negative"])
def test_hand_edited_numbers_are_refused_and_recomputed(tiny, monkeypatch, capsys, edit, needle):
    assert eval_rt(monkeypatch, capsys, tiny)[0] == 0
    (path,) = list((tiny / "results").rglob("*.json"))
    doc = json.loads(path.read_text(encoding="utf-8"))
    good = doc["primary"]
    edit(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")  # json writes NaN as NaN: what a hand edit leaves
    code, _, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(tiny / "results"), "--out", str(tiny / "lb.md"))
    assert code == 1 and "implausible result" in the_line(err, needle)
    assert "1 result file(s) could not be read" in (tiny / "lb.md").read_text(encoding="utf-8")
    code, _, err = eval_rt(monkeypatch, capsys, tiny)
    assert code == 0 and "redo" in the_line(err, "implausible")
    assert json.loads(path.read_text(encoding="utf-8"))["primary"] == good
    assert path.with_name(path.name + ".replaced").is_file()  # the edited file is kept, not overwritten


def test_leaderboard_skips_a_fifo_instead_of_hanging(tmp_path):
    results = tmp_path / "results"
    rec = make_record(cls_records(*_cls(), ["g"] * 8), "accuracy")
    write_records(results, [rec])
    os.mkfifo(results / "smoke" / "trap.json")
    proc = subprocess.run([sys.executable, "-m", "lvmbench.cli", "leaderboard", "--results", str(results), "--out", str(tmp_path / "lb.md"), "--n-boot", "200"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "not a regular file" in the_line(proc.stderr, "trap.json")
    assert "| resnet18" in (tmp_path / "lb.md").read_text(encoding="utf-8")


def _cls():
    import numpy as np

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    return labels, np.eye(4)[labels]


def test_leaderboard_out_folder_names_the_out_option(tmp_path, monkeypatch, capsys):
    write_records(tmp_path / "r", [make_record(cls_records(*_cls(), ["g"] * 8), "accuracy")])
    (tmp_path / "outdir").mkdir()
    code, _, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "outdir"), "--n-boot", "200")
    line = the_line(err, "--out")
    assert code == 2 and "fix: pass --out FILE.md" in line and "--results" not in line


def test_unknown_task_column_gets_a_note(tmp_path, monkeypatch, capsys):
    write_records(tmp_path / "r", [make_record(cls_records(*_cls(), ["g"] * 8), "accuracy", task="gone_task")])
    code, _, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb.md"), "--n-boot", "200")
    assert code == 0 and "not registered" in the_line(err, "gone_task")
    assert "not registered in this checkout" in (tmp_path / "lb.md").read_text(encoding="utf-8")


def test_empty_validation_split_fails_the_unit_with_the_fix(tmp_path, monkeypatch, capsys):
    tasks = tiny_task_dir(tmp_path / "tasks", "noval", "noval_data")
    yml = tasks / "noval" / "task.yaml"
    yml.write_text(yml.read_text(encoding="utf-8").replace("val: 0.25", "val: 0.0"), encoding="utf-8")
    write_class_folders(tmp_path / "data" / "noval_data")
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tasks))
    TASKS.reset()
    try:
        code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--tasks", "noval", "--protocol", "knn", "--data-root", str(tmp_path / "data"),
                           "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--workers", "0")
    finally:
        TASKS.reset()
    line = the_line(err, "FAIL")
    assert code == 1 and "validation split, which is empty" in line and "fix:" in line
    assert not list((tmp_path / "results").rglob("*.json"))


def test_a_diverging_run_stops_with_one_line(tmp_path, monkeypatch, capsys):
    tasks = tiny_seg_task_dir(tmp_path / "tasks", "diverge", "diverge_data")
    yml = tasks / "diverge" / "task.yaml"
    yml.write_text(yml.read_text(encoding="utf-8").replace("lr: 0.001, epochs: 1", "lr: 1.0e+30, epochs: 4"), encoding="utf-8")
    write_kvasir(tmp_path / "data" / "diverge_data", n=12)
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tasks))
    TASKS.reset()
    try:
        code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--tasks", "diverge", "--data-root", str(tmp_path / "data"),
                           "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--workers", "0")
    finally:
        TASKS.reset()
    assert code == 1 and "fix: lower lr" in the_line(err, "training diverged")
    assert not list((tmp_path / "results").rglob("*.json"))


def test_ctrl_c_stops_between_steps_says_what_was_saved_and_exits_130(tmp_path):
    # units run in key order: a_intr's kNN (seconds), then b_intr's long fine-tuning
    tasks = tiny_task_dir(tmp_path / "tasks", "a_intr", "intr_data")
    tiny_task_dir(tasks, "b_intr", "intr_data")
    yml = tasks / "b_intr" / "task.yaml"
    yml.write_text(yml.read_text(encoding="utf-8").replace("finetune: {epochs: 2,", "finetune: {epochs: 400,").replace("default_protocols: [knn]", "default_protocols: [finetune]"), encoding="utf-8")
    write_class_folders(tmp_path / "data" / "intr_data")
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(tasks), "LVMBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lvmbench.cli", "eval", "--encoder", "resnet18", "--tasks", "a_intr,b_intr",
         "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results"), "--no-progress", "--workers", "1"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    lines = []
    deadline = time.time() + 300
    for line in proc.stderr:  # knn finishes first (sorted plan), then fine-tuning runs for long
        lines.append(line)
        if line.startswith("done") and "knn" in line:
            time.sleep(3)  # into the fine-tuning epochs, data-loader worker running
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "interrupted: 1 unit(s) finished in this run are saved" in err
    saved = sorted(p.name for p in (tmp_path / "results").rglob("*.json"))
    assert saved == ["knn-s0.json"]
