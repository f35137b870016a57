"""Bad-input catalogue: each case prints one line naming the file (or the bad value) and the fix,
exits non-zero, shows no traceback, writes nothing for the failed unit and leaves other units alone.

Runs the CLI in-process (``lvmbench.cli.main`` with ``sys.argv`` patched) on tiny tasks of its own,
registered for this module only; data faults share one ``eval`` run (one faulty task each, next to a
healthy one), so the whole catalogue costs a few units of work.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from builders import tiny_seg_task_dir, tiny_task_dir, write_class_folders, write_decathlon, write_fgadr, write_kvasir  # noqa: F401
from cli_helpers import cli, the_line  # noqa: F401 (used by the cases below)
from PIL import Image

from lvmbench.errors import DataError
from lvmbench.spec import RunOptions
from lvmbench.tasks import TASKS, load_task_file

pytestmark = pytest.mark.usefixtures("one_thread")


def _truncate(p: Path) -> None:
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])


def _csv_replace(root: Path, old: str, new: str) -> None:
    f = root / "DR_Seg_Grading_Label.csv"
    f.write_text(f.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


def _nan_volume(root: Path) -> None:
    import nibabel as nib

    p = root / "images" / "vol_2.nii.gz"
    img = np.asarray(nib.load(str(p)).get_fdata(), np.float32)
    img[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(img, np.eye(4)), str(p))


# task id -> (writer, fault, what the line must contain, the file it must name (relative to the data root))
DATA_FAULTS = {
    "b_missing": (None, None, "dataset folder for task 'b_missing' not found", "b_missing"),
    "b_layout": ("cls", lambda r: [shutil.rmtree(r / "Testing"), (r / "Training").rename(r / "train")], "no 'Training/' or 'Testing/' found", "b_layout"),
    "b_class": ("cls", lambda r: (r / "Training" / "a").rename(r / "Training" / "tumour"), "class folder 'tumour' is not one of the task's classes", "b_class/Training/tumour"),
    "b_noimages": ("cls", lambda r: [p.unlink() for p in r.rglob("*.png")], "no images found", "b_noimages"),
    "b_truncated": ("cls", lambda r: _truncate(r / "Testing" / "a" / "a01.png"), "unreadable or truncated image", "b_truncated/Testing/a/a01.png"),
    "b_notimage": ("cls", lambda r: (r / "Testing" / "b" / "b02.png").write_text("<html>not found</html>", encoding="utf-8"), "unreadable or truncated image", "b_notimage/Testing/b/b02.png"),
    "b_zerobytes": ("cls", lambda r: (r / "Training" / "a" / "a03.png").write_bytes(b""), "unreadable or truncated image", "b_zerobytes/Training/a/a03.png"),
    "b_nocsv": ("fgadr", lambda r: (r / "DR_Seg_Grading_Label.csv").unlink(), "grading CSV not found", "b_nocsv/DR_Seg_Grading_Label.csv"),
    "b_badgrade": ("fgadr", lambda r: _csv_replace(r, "0003_x.png,3", "0003_x.png,three"), "grade 'three' is not an integer", "b_badgrade/DR_Seg_Grading_Label.csv"),
    "b_labelrange": ("fgadr", lambda r: _csv_replace(r, "0004_x.png,4", "0004_x.png,7"), "label 7, outside the task's 5 classes", "b_labelrange/Original_Images/0004_x.png"),
    "b_masksize": ("seg2d", lambda r: Image.fromarray(np.zeros((10, 10), np.uint8)).save(r / "masks" / "c03.png"), "differ in size", "b_masksize/images/c03.png"),
    "b_maskempty": ("seg2d", lambda r: (r / "masks" / "c04.png").write_bytes(b""), "unreadable", "b_maskempty/masks/c04.png"),
    "b_nanvolume": ("seg3d", _nan_volume, "NaN/inf values", "b_nanvolume/images/vol_2.nii.gz"),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Task folders and data for every fault, registered in the task registry for this module."""
    base = tmp_path_factory.mktemp("catalogue")
    tasks, data = base / "tasks", base / "data"
    tiny_task_dir(tasks, "w8ok", "w8ok")
    write_class_folders(data / "w8ok")
    for tid, (kind, fault, _, _) in DATA_FAULTS.items():
        if kind is None:
            tiny_task_dir(tasks, tid, tid)
            continue
        if kind in ("cls", "fgadr"):
            tiny_task_dir(tasks, tid, tid, reader="class_folders" if kind == "cls" else "fgadr")
            root = (write_class_folders if kind == "cls" else write_fgadr)(data / tid)
        else:
            tiny_seg_task_dir(tasks, tid, tid, dims="2d" if kind == "seg2d" else "3d")
            root = (write_kvasir if kind == "seg2d" else write_decathlon)(data / tid)
        fault(root)
    TASKS.names()  # discover the repository's tasks first
    added = []
    for yml in sorted(tasks.glob("*/task.yaml")):
        spec = load_task_file(yml)
        TASKS.add(spec.id, spec)
        added.append(spec.id)
    yield SimpleNamespace(base=base, tasks=tasks, data=data, cache=base / "cache")
    for tid in added:
        TASKS._items.pop(tid, None)


def results_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json")) if root.exists() else []


# ---------------------------------------------------------------- data faults: one eval, many tasks


@pytest.fixture(scope="module")
def data_run(env, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    results = tmp_path_factory.mktemp("data_run") / "results"
    from lvmbench import cli as cli_mod

    mp.setattr(sys, "argv", ["lvmbench", "eval", "--encoder", "resnet18", "--tasks", ",".join(["w8ok", *DATA_FAULTS]), "--data-root", str(env.data), "--results", str(results), "--cache-dir", str(env.cache), "--no-progress"])
    import contextlib
    import io

    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            cli_mod.main()
        except SystemExit as e:
            code = e.code
    mp.undo()
    return SimpleNamespace(code=code, err=err.getvalue(), results=results)


@pytest.mark.parametrize("task", list(DATA_FAULTS))
def test_data_fault_fails_its_unit_with_one_line(task, data_run, env):
    _, _, needle, file = DATA_FAULTS[task]
    assert data_run.code == 1
    fails = [ln for ln in data_run.err.splitlines() if ln.startswith(f"FAIL  lvmmed/resnet18/random-init/{task}/")]
    assert len(fails) == 1, data_run.err
    line = fails[0]
    assert "Traceback" not in data_run.err
    assert needle in line and "; fix: " in line
    assert f": {env.data / file}: " in line, "the line names the file"
    assert not any(f"/{task}/" in r for r in results_of(data_run.results)), "nothing written for the failed unit"


def test_data_faults_leave_the_healthy_unit_alone(data_run):
    assert results_of(data_run.results) == ["lvmmed/resnet18/random-init/w8ok/knn-s0.json"]
    assert f"{len(DATA_FAULTS)} failed" in data_run.err
    assert not list(data_run.results.rglob("*.lock")) and not list(data_run.results.rglob(".*.tmp"))


def test_all_background_mask_is_a_warning_not_a_failure(env, monkeypatch, capsys):
    """An empty (all-background) mask is legitimate (BUSI 'normal' cases): `data verify` names it
    as a warning and runs go on; an empty *file* is an error (b_maskempty above)."""
    root = env.data / "bg_only"
    write_kvasir(root)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "c04.png")
    tiny_seg_task_dir(env.tasks, "w8bgmask", "bg_only")
    spec = load_task_file(env.tasks / "w8bgmask" / "task.yaml")
    TASKS.add(spec.id, spec)
    try:
        code, out, err = cli(monkeypatch, capsys, "data", "verify", "w8bgmask", "--data-root", str(env.data), "--no-progress")
    finally:
        TASKS._items.pop("w8bgmask", None)
    line = the_line(out + err, "mask has no foreground")
    assert "bg_only/masks/c04.png" in line and "fix:" in line and code == 0


# ---------------------------------------------------------------- names and arguments

ARG_FAULTS = [
    (["--tasks", "w8okk"], "did you mean 'w8ok'"),
    (["--encoder", "resnet1B"], "no encoder 'resnet1B'"),
    (["--suite", "lvmed"], "did you mean 'lvmmed'"),
    (["--protocol", "knnn"], "no protocol 'knnn'; did you mean 'knn'"),
    (["--label-fraction", "0"], "--label-fraction values must be in (0, 1]"),
    (["--label-fraction", "1.5"], "--label-fraction values must be in (0, 1]"),
    (["--seeds", "0,one"], "--seeds must be integers"),
    (["--seeds", "0,0"], "names unit lvmmed/resnet18/random-init/w8ok/knn-s0.json twice"),
    (["--label-fraction", "0.5,0.50"], "names unit lvmmed/resnet18/random-init/w8ok/knn-s0-f0.5.json twice"),
    (["--shard", "2/2"], "--shard 2/2: need 0 <= i < n"),
]


@pytest.mark.parametrize("extra, needle", ARG_FAULTS, ids=[" ".join(a) for a, _ in ARG_FAULTS])
def test_bad_arguments_are_one_line(extra, needle, env, tmp_path, monkeypatch, capsys):
    args = {"--encoder": "resnet18", "--tasks": "w8ok", "--suite": "lvmmed"}
    flags = dict(zip(extra[::2], extra[1::2]))
    args.update({k: v for k, v in flags.items() if k in args})
    rest = [x for k, v in flags.items() if k not in args for x in (k, v)]
    argv = ["eval", *[x for kv in args.items() for x in kv], *rest, "--data-root", str(env.data), "--results", str(tmp_path / "r"), "--no-progress"]
    code, _, err = cli(monkeypatch, capsys, *argv)
    assert code == 2, err
    line = the_line(err, needle)
    assert len(err.strip().splitlines()) == 1 and line.startswith("error: ")
    assert results_of(tmp_path / "r") == []


# ---------------------------------------------------------------- checkpoints


class _Evil:
    """A pickle that would run a shell command on load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _ckpt(kind: str, d: Path) -> Path:
    import torchvision

    p = d / f"{kind}.pth"
    if kind == "wrong_keys":
        torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4)).state_dict(), p)
    elif kind == "wrong_shapes":
        sd = torchvision.models.resnet18().state_dict()
        sd["conv1.weight"] = torch.zeros(64, 3, 5, 5)
        torch.save(sd, p)
    elif kind == "pickle_code":
        torch.save({"state_dict": _Evil(d / "PWNED")}, p)
    elif kind == "not_checkpoint":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty_file":
        p.write_bytes(b"")
    elif kind == "corrupt_safetensors":
        p = d / "w.safetensors"
        p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken json}")
    elif kind == "no_state_dict":
        torch.save({"epoch": 3, "note": "training log only"}, p)
    elif kind == "missing":
        p = d / "nowhere" / "w.pth"
    return p


CKPT_FAULTS = {
    "missing": "weights file not found",
    "wrong_keys": "keys do not match",
    "wrong_shapes": "have the wrong shape",
    "pickle_code": "refusing to unpickle",
    "not_checkpoint": "not a PyTorch checkpoint",
    "empty_file": "not a PyTorch checkpoint",
    "corrupt_safetensors": "not a readable safetensors file",
    "no_state_dict": "no state_dict found",
}


@pytest.mark.parametrize("kind", list(CKPT_FAULTS))
def test_bad_checkpoints_are_refused_with_one_line(kind, env, tmp_path, monkeypatch, capsys):
    weights = _ckpt(kind, tmp_path)
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--weights", str(weights), "--suite", "lvmmed", "--tasks", "w8ok", "--data-root", str(env.data), "--results", str(tmp_path / "r"), "--no-progress")
    assert code == 2, err
    line = the_line(err, CKPT_FAULTS[kind])
    assert str(weights) in line and "; fix: " in line and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "PWNED").exists(), "loading a checkpoint must never run code"
    assert results_of(tmp_path / "r") == []


# ---------------------------------------------------------------- the results tree


@pytest.fixture(scope="module")
def healthy(env, tmp_path_factory):
    """A results tree with two finished units (knn and linear on the healthy task)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("healthy") / "results"
    from lvmbench.runner import EvalRequest, run

    s = run(EvalRequest(encoder="resnet18", suite="lvmmed", tasks=["w8ok"], protocols=["knn", "linear"], data_root=env.data, results=root, cache_dir=env.cache, run=RunOptions(progress=False)), log=lambda s: None)
    mp.undo()
    assert len(s.done) == 2
    return root


def _eval(env, results: Path, *extra: str) -> list[str]:
    return ["eval", "--encoder", "resnet18", "--suite", "lvmmed", "--tasks", "w8ok", "--protocol", "knn,linear", "--data-root", str(env.data), "--results", str(results), "--cache-dir", str(env.cache), "--no-progress", *extra]


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_unwritable_results_folder(where, env, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x", encoding="utf-8")
    results = blocker / "results" if where == "under_a_file" else blocker
    code, _, err = cli(monkeypatch, capsys, *_eval(env, results))
    assert code == 2
    line = the_line(err, "cannot create results folder (Not a directory)")
    assert str(blocker) in line and "fix: pass a writable --results DIR" in line
    assert blocker.read_text(encoding="utf-8") == "x"


def test_full_disk_fails_only_the_unit_that_could_not_be_written(env, healthy, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up while the linear unit's result is written
        if "linear-s0.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = cli(monkeypatch, capsys, *_eval(env, results))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert code == 1
    line = the_line(err, "cannot write result (No space left on device)")
    assert line.startswith("FAIL  lvmmed/resnet18/random-init/w8ok/linear-s0.json") and "linear-s0.json" in line.split(": ", 1)[1] and "fix: free disk space" in line
    assert results_of(results) == ["lvmmed/resnet18/random-init/w8ok/knn-s0.json"]
    assert not [p for p in results.rglob("*") if p.name.endswith(".tmp")], "no temp file left behind"


def test_corrupt_result_is_reported_by_leaderboard_and_recomputed_by_eval(env, healthy, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    shutil.copytree(healthy, results)
    bad = results / "lvmmed/resnet18/random-init/w8ok/linear-s0.json"
    bad.write_text(bad.read_text(encoding="utf-8")[:200], encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(results), "--out", str(tmp_path / "lb.md"), "--n-boot", "200")
    assert code == 1
    line = the_line(err, "corrupt result file")
    assert line.startswith(f"skip  {bad}:") and "fix: delete it and rerun `lvmbench eval`" in line
    board = (tmp_path / "lb.md").read_text(encoding="utf-8")
    rows = [ln for ln in board.split("| w8ok", 1)[1].splitlines() if ln.startswith("| resnet18")]  # w8ok's family table
    assert any("| knn " in r for r in rows) and not any("| linear " in r for r in rows) and "1 result file(s) could not be read" in board
    code, _, err = cli(monkeypatch, capsys, *_eval(env, results))
    assert code == 0 and "redo  lvmmed/resnet18/random-init/w8ok/linear-s0.json" in err
    json.loads(bad.read_text(encoding="utf-8"))


def test_a_copied_result_is_not_counted_twice(env, healthy, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    shutil.copytree(healthy, results)
    src = results / "lvmmed/resnet18/random-init/w8ok/knn-s0.json"
    copy = src.with_name("knn-s0 (1).json")
    shutil.copy(src, copy)
    code, _, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(results), "--out", str(tmp_path / "lb.md"), "--n-boot", "200")
    assert code == 1
    line = the_line(err, "not at its unit's path")
    assert str(copy) in line and "fix: delete the copy" in line
    assert "(n=1)" in (tmp_path / "lb.md").read_text(encoding="utf-8") and "(n=2)" not in (tmp_path / "lb.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["leaderboard", "--results", "{tmp}/nowhere"], "results folder not found"),
        (["compare", "resnet18", "resnet50", "--results", "{healthy}"], "no results for encoder 'resnet50'"),
        (["compare", "resnet18", "resnet18@random", "--results", "{healthy}"], "name the same encoder"),
        (["audit", "--pretrain-manifest", "{tmp}/missing.json", "--results", "{tmp}/r"], "cannot read the manifest"),
        (["leaderboard", "--results", "{healthy}", "--n-boot", "5"], "--n-boot 5 is too small"),
    ],
)
def test_report_commands_fail_with_one_line(argv, needle, healthy, tmp_path, monkeypatch, capsys):
    args = [a.format(tmp=tmp_path, healthy=healthy) for a in argv]
    code, _, err = cli(monkeypatch, capsys, *args, *(["--out", str(tmp_path / "lb.md")] if args[0] == "leaderboard" else []))
    assert code == 2, err
    line = the_line(err, needle)
    assert len(err.strip().splitlines()) == 1 and "fix:" in line
    assert not (tmp_path / "lb.md").exists()


# ---------------------------------------------------------------- errors raised in loader workers and task files


class _Faulty(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        raise DataError("unreadable or truncated image (image file is truncated)", path="/data/x/a01.png", fix="re-download or re-export this file")


def test_errors_from_loader_workers_stay_one_line():
    from lvmbench.runner import user_message

    with pytest.raises(DataError) as ei:
        next(iter(torch.utils.data.DataLoader(_Faulty(), num_workers=1)))
    assert "Traceback" in str(ei.value), "torch re-raises with the worker's traceback in the message"
    assert user_message(ei.value) == "/data/x/a01.png: unreadable or truncated image (image file is truncated); fix: re-download or re-export this file"


def test_task_file_typo_through_the_real_entry_point(tmp_path):
    d = tiny_task_dir(tmp_path / "tasks", "w8typo", "x")
    y = d / "w8typo" / "task.yaml"
    y.write_text(y.read_text(encoding="utf-8").replace("primary_metric:", "primary_metrik:"), encoding="utf-8")
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(d)}
    r = subprocess.run([sys.executable, "-m", "lvmbench.cli", "tasks"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(y) in r.stderr and "primary_metric" in r.stderr and "fix:" in r.stderr
