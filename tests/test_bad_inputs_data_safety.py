"""Bad inputs that could destroy, pollute or leak data, and broken locations.

- the synthetic (smoke) suite and ``data synth`` never touch a folder lvmbench did not create
  (a real data root given through LVMBENCH_DATA or --data-root keeps every byte), and first-time
  generation by several processes at once is serialised;
- an unusable cache folder (--cache-dir, LVMBENCH_CACHE) or splits folder (LVMBENCH_SPLITS) is one
  line, not a traceback;
- a task's data.dir (or an OOD set's dir) may not point outside the data root.

The CLI runs in-process (``lvmbench.cli.main``) except where separate processes are the point.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from builders import tiny_task_dir, write_class_folders
from cli_helpers import cli, the_line

from lvmbench.data.cache import ArrayCache
from lvmbench.data.synth import REVISIONS, SYNTH, SYNTH_VERSION, ensure_synthetic, synthetic_root, write_all
from lvmbench.errors import DataError, UserError
from lvmbench.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")

CHEAP = "retinamnist_linear"  # smoke task on one small .npz: cheapest to verify and to evaluate
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too) with its content hash: equal means untouched."""
    out = {".": "dir" if root.is_dir() else "absent"}
    for p in sorted(root.rglob("*")):
        out[p.relative_to(root).as_posix()] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def real_looking_root(root: Path) -> Path:
    """A user's data root: publisher-named folders (the synthetic datasets' names), no markers."""
    files = {
        "Kvasir-SEG/images/cju0qkwl35piu0993l0dewei2.jpg": b"\xff\xd8\xff\xe0 real polyp",
        "Kvasir-SEG/masks/cju0qkwl35piu0993l0dewei2.jpg": b"\xff\xd8\xff\xe0 real mask",
        "BrainTumor/Training/glioma_tumor/gg (1).jpg": b"\xff\xd8\xff\xe0 real mri",
        "ISIC2018/ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg": b"\xff\xd8\xff\xe0 real lesion",
        "medmnist/retinamnist.npz": b"PK\x03\x04 real npz",
        "notes.txt": b"my licensed datasets, do not delete\n",
    }
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    return root


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    """A cache whose smoke-suite synthetic data is already written (generation costs seconds)."""
    cache = tmp_path_factory.mktemp("smoke_cache")
    ensure_synthetic(synthetic_root(cache))
    return cache


@pytest.fixture
def smoke_env(smoke_cache, tmp_path, monkeypatch) -> SimpleNamespace:
    monkeypatch.setenv("LVMBENCH_CACHE", str(smoke_cache))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))
    monkeypatch.delenv("LVMBENCH_DATA", raising=False)
    real = real_looking_root(tmp_path / "real")
    return SimpleNamespace(cache=smoke_cache, real=real, tmp=tmp_path)


def smoke_commands(tmp: Path) -> dict[str, list[str]]:
    return {
        "eval": ["eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", CHEAP, "--protocol", "linear", "--head", "linear", "--results", str(tmp / "results"), "--no-progress"],
        "verify": ["data", "verify", CHEAP, "--suite", "smoke", "--no-progress"],
        "tasks": ["tasks", "--suite", "smoke"],
        "split": ["data", "split", CHEAP, "--suite", "smoke", "--out", str(tmp / "split.json")],
    }


# ---------------------------------------------------------------- 1. the smoke suite and `data synth` keep real data


@pytest.mark.parametrize("command", ["eval", "verify", "tasks", "split"])
def test_smoke_suite_ignores_lvmbench_data_and_keeps_every_byte(command, smoke_env, monkeypatch, capsys):
    """README says `export LVMBENCH_DATA=...`: a smoke run in that shell uses the cache's synthetic
    data (one note says so) and never writes into the real root."""
    before = tree_digest(smoke_env.real)
    monkeypatch.setenv("LVMBENCH_DATA", str(smoke_env.real))
    code, out, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)[command])
    assert tree_digest(smoke_env.real) == before, "the real data root was modified"
    assert code == 0, err
    line = the_line(err, "LVMBENCH_DATA")
    assert "is ignored" in line and str(smoke_env.real) in line
    if command == "tasks":
        assert "ready (" in out  # the listing describes the synthetic root, not the real one


@pytest.mark.parametrize("command", ["eval", "verify", "tasks", "split"])
def test_smoke_suite_refuses_a_data_root_it_did_not_write(command, smoke_env, monkeypatch, capsys):
    before = tree_digest(smoke_env.real)
    code, _, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)[command], "--data-root", str(smoke_env.real))
    assert tree_digest(smoke_env.real) == before, "the real data root was modified"
    assert code == 2
    line = the_line(err, "not a synthetic data root lvmbench wrote")
    assert line.startswith(f"error: {smoke_env.real}: ") and "fix: drop --data-root" in line


@pytest.mark.parametrize("only", [None, "Kvasir-SEG", "DRIVE"])
def test_data_synth_refuses_a_real_data_root(only, smoke_env, monkeypatch, capsys):
    """Also with --only naming a folder the root does not have yet (DRIVE): synthetic data mixed
    into a real root would be scored as real data by the real suite."""
    before = tree_digest(smoke_env.real)
    args = ["data", "synth", str(smoke_env.real)] + (["--only", only] if only else [])
    code, _, err = cli(monkeypatch, capsys, *args)
    assert tree_digest(smoke_env.real) == before
    assert code == 2
    line = the_line(err, "refusing to write synthetic data into a folder lvmbench did not create")
    assert line.startswith(f"error: {smoke_env.real}: ") and "Kvasir-SEG" in line and "fix: pass a new or empty folder" in line


def test_mistyped_data_root_is_never_created(smoke_env, monkeypatch, capsys):
    typo = smoke_env.tmp / "dataa"
    monkeypatch.setenv("LVMBENCH_DATA", str(typo))
    code, _, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)["verify"])
    assert code == 0 and not typo.exists()
    monkeypatch.delenv("LVMBENCH_DATA")
    code, _, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)["verify"], "--data-root", str(typo))
    assert code == 2 and not typo.exists()
    assert str(typo) in the_line(err, "not a synthetic data root")


def test_data_synth_replaces_only_its_own_folders(tmp_path, monkeypatch, capsys):
    out = tmp_path / "synth"
    code, _, err = cli(monkeypatch, capsys, "data", "synth", str(out), "--only", "medmnist,BrainTumor")
    assert code == 0, err
    # a user drops their own dataset into the synthetic root, under a synthetic dataset's name
    mine = out / "Kvasir-SEG" / "images"
    mine.mkdir(parents=True)
    (mine / "real.jpg").write_bytes(b"\xff\xd8 real")
    before = tree_digest(out)
    code, _, err = cli(monkeypatch, capsys, "data", "synth", str(out))
    assert code == 2 and tree_digest(out) == before, "nothing written or removed when one folder is not lvmbench's"
    line = the_line(err, "refusing to replace 'Kvasir-SEG'")
    assert line.startswith(f"error: {out / 'Kvasir-SEG'}: ") and "no .complete marker" in line
    # its own, outdated folder is rewritten; an up-to-date one is left as it is
    marker = out / "medmnist" / ".complete"
    marker.write_text(json.dumps({"version": SYNTH_VERSION - 1}), encoding="utf-8")
    brain = tree_digest(out / "BrainTumor")
    code, _, err = cli(monkeypatch, capsys, "data", "synth", str(out), "--only", "medmnist,BrainTumor")
    assert code == 0, err
    assert json.loads(marker.read_text(encoding="utf-8"))["version"] == SYNTH_VERSION
    assert tree_digest(out / "BrainTumor") == brain
    assert "wrote 1 synthetic dataset(s)" in err and "medmnist" in err


def test_a_writer_revision_rewrites_that_dataset_alone_from_the_same_draws(tmp_path):
    """A dataset whose writer changed (REVISIONS) is rewritten in a cache written before the change;
    the other datasets, and the parts of it the change did not touch, stay byte for byte."""
    root = tmp_path / "synth"
    assert write_all(root, ["Prostate", "medmnist"]) == ["Prostate", "medmnist"]
    medmnist, bmc = tree_digest(root / "medmnist"), tree_digest(root / "Prostate" / "BMC")
    marker = root / "Prostate" / ".complete"
    assert json.loads(marker.read_text(encoding="utf-8"))["revision"] == REVISIONS["Prostate"] > 1
    marker.write_text(json.dumps({"version": SYNTH_VERSION}), encoding="utf-8")  # as written before the revision
    assert write_all(root, ["Prostate", "medmnist"]) == ["Prostate"]
    assert json.loads(marker.read_text(encoding="utf-8"))["revision"] == REVISIONS["Prostate"]
    assert tree_digest(root / "medmnist") == medmnist and tree_digest(root / "Prostate" / "BMC") == bmc
    assert write_all(root, ["Prostate", "medmnist"]) == []


def test_data_synth_into_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    f = tmp_path / "data.txt"
    f.write_text("x", encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "data", "synth", str(f))
    assert code == 2 and f.read_text(encoding="utf-8") == "x"
    assert the_line(err, "not a folder").startswith(f"error: {f}: ")


def test_a_synthetic_root_written_by_lvmbench_is_accepted_as_data_root(smoke_env, monkeypatch, capsys):
    own = smoke_env.tmp / "own-synth"
    assert cli(monkeypatch, capsys, "data", "synth", str(own), "--only", "medmnist")[0] == 0
    code, out, err = cli(monkeypatch, capsys, "data", "verify", CHEAP, "--suite", "smoke", "--data-root", str(own), "--no-progress")
    assert code == 0, err
    assert f"{CHEAP}: {own / 'medmnist'}" in out


def test_a_root_written_before_the_root_marker_existed_is_still_ours(tmp_path):
    """Synthetic roots of earlier versions hold only marked dataset folders: still lvmbench's."""
    from lvmbench.data.synth import LOCK, ROOT_MARKER, is_synthetic_root

    root = tmp_path / "old"
    write_all(root, ["medmnist"])
    (root / ROOT_MARKER).unlink()
    (root / LOCK).unlink()
    (root / "medmnist" / ".complete").write_text(json.dumps({"version": SYNTH_VERSION}), encoding="utf-8")  # the old marker
    assert is_synthetic_root(root)
    assert write_all(root, ["medmnist", "BrainTumor"]) == ["BrainTumor"]


def test_concurrent_first_smoke_runs_generate_once(tmp_path):
    """Three first smoke runs at once on an empty cache: all succeed, one process writes the data.

    Each process resolves the smoke suite's data root as `eval`/`data verify --suite smoke` do
    (without importing torch and the CLI, which would make this test several times slower)."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "LVMBENCH_DATA"}
    env.update(LVMBENCH_CACHE=str(cache))
    code = "import sys; from lvmbench.data.synth import synthetic_suite_root; synthetic_suite_root(None, log=lambda s: print(s, file=sys.stderr))"
    cmd = [sys.executable, "-c", code]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
    writers = [p.pid for p, (_, err) in zip(procs, outs) if "writing" in err and "synthetic dataset(s)" in err]
    assert len(writers) == 1, [err for _, err in outs]
    root = synthetic_root(cache)
    stamps = {n: json.loads((root / n / ".complete").read_text(encoding="utf-8")) for n in SYNTH.names()}
    assert {s["pid"] for s in stamps.values()} == set(writers), "every dataset written by the same, single process"
    assert not [p for p in root.iterdir() if p.name.startswith(".") and p.is_dir()], "no temporary folder left"


# ---------------------------------------------------------------- 2. an unusable cache folder


@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_unusable_cache_dir_is_one_line(where, smoke_env, monkeypatch, capsys):
    blocker = smoke_env.tmp / "blocker"
    blocker.write_text("x", encoding="utf-8")
    cache = blocker if where == "is_a_file" else blocker / "cache"
    code, _, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)["eval"], "--cache-dir", str(cache))
    assert code == 2 and blocker.read_text(encoding="utf-8") == "x"
    line = the_line(err, "cannot use the cache folder")
    assert line.startswith(f"error: {cache}: ") and "fix: pass --cache-dir a folder you can write to" in line
    assert not (smoke_env.tmp / "results").exists()


@pytest.mark.parametrize("command", ["eval", "verify"])
def test_unusable_lvmbench_cache_is_one_line(command, smoke_env, monkeypatch, capsys):
    blocker = smoke_env.tmp / "blocker"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("LVMBENCH_CACHE", str(blocker))
    code, _, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)[command])
    assert code == 2 and blocker.read_text(encoding="utf-8") == "x"
    line = the_line(err, "cannot use the cache folder (it is a file, not a folder)")
    assert line.startswith(f"error: {blocker}: ") and "LVMBENCH_CACHE" in line


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")
def test_read_only_cache_dir_is_one_line(smoke_env, monkeypatch, capsys):
    ro = smoke_env.tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)["eval"], "--cache-dir", str(ro))
    finally:
        ro.chmod(0o755)
    assert code == 2 and "Permission denied" in the_line(err, f"error: {ro}: cannot use the cache folder")


@pytest.fixture
def tiny_tasks(tmp_path, monkeypatch):
    """Tiny real-data tasks for one test, in a folder on LVMBENCH_TASK_PATH as a user's would be: one
    healthy, the others given as (id, data.dir)."""
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tmp_path / "tasks"))

    def add(task_id: str, data_dir: str) -> None:
        tiny_task_dir(tmp_path / "tasks", task_id, data_dir)
        TASKS.reset()

    yield add
    TASKS.reset()


def test_unusable_cache_dir_on_real_data_is_one_line(tiny_tasks, tmp_path, monkeypatch, capsys):
    tiny_tasks("w9ok", "w9ok")
    write_class_folders(tmp_path / "data" / "w9ok")
    blocker = tmp_path / "blocker"
    blocker.write_text("x", encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--tasks", "w9ok", "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "r"), "--cache-dir", str(blocker / "c"), "--no-progress")
    assert code == 2
    assert the_line(err, "cannot use the cache folder (Not a directory)").startswith(f"error: {blocker / 'c'}: ")


def test_cache_that_breaks_mid_run_names_the_folder(tmp_path):
    """A cache entry that cannot be written (here its shard folder is blocked by a file; a full
    disk reads the same) is a UserError naming the folder: the runner fails that unit in one line."""
    store = ArrayCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "ab").write_text("in the way", encoding="utf-8")
    with pytest.raises(UserError) as e:
        store.get_or_compute(key, lambda: np.zeros(3, np.float32))
    assert str(e.value).startswith(f"{tmp_path / 'cache' / 'ab'}: cannot write to the cache") and "--cache-dir" in str(e.value)


# ---------------------------------------------------------------- 3. LVMBENCH_SPLITS


@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_splits_folder_that_is_a_file_is_one_line(where, smoke_env, monkeypatch, capsys):
    blocker = smoke_env.tmp / "splits.json"
    blocker.write_text("{}", encoding="utf-8")
    splits = blocker if where == "is_a_file" else blocker / "sub"
    monkeypatch.setenv("LVMBENCH_SPLITS", str(splits))
    code, _, err = cli(monkeypatch, capsys, "data", "split", CHEAP, "--suite", "smoke")
    assert code == 2 and blocker.read_text(encoding="utf-8") == "{}"
    line = the_line(err, "the splits folder")
    assert line.startswith(f"error: {splits}: ") and "fix: point LVMBENCH_SPLITS at a folder" in line
    # a run must not fall back to the task's rule without a word either
    code, out, err = cli(monkeypatch, capsys, *smoke_commands(smoke_env.tmp)["verify"])
    assert code == 1
    assert "LVMBENCH_SPLITS" in the_line(out + err, "the splits folder")


def test_split_out_under_a_file_is_one_line(smoke_env, monkeypatch, capsys):
    blocker = smoke_env.tmp / "blocker"
    blocker.write_text("x", encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "data", "split", CHEAP, "--suite", "smoke", "--out", str(blocker / "s.json"))
    assert code == 2 and blocker.read_text(encoding="utf-8") == "x"
    assert the_line(err, "cannot write the split file").startswith(f"error: {blocker / 's.json'}: ")


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")
def test_read_only_splits_folder_is_one_line(smoke_env, monkeypatch, capsys):
    ro = smoke_env.tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setenv("LVMBENCH_SPLITS", str(ro))
    try:
        code, _, err = cli(monkeypatch, capsys, "data", "split", CHEAP, "--suite", "smoke")
    finally:
        ro.chmod(0o755)
    assert code == 2 and "Permission denied" in the_line(err, "cannot write the split file")


# ---------------------------------------------------------------- 4. data.dir outside the data root


@pytest.mark.parametrize("kind", ["climb", "absolute", "climb_after_a_folder"])
def test_data_dir_outside_the_data_root_is_refused(kind, tiny_tasks, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    outside = write_class_folders(tmp_path / "elsewhere")  # readable data: today's code would use it
    root.mkdir()
    data_dir = {"climb": "../elsewhere", "absolute": str(outside), "climb_after_a_folder": "x/../../elsewhere"}[kind]
    (root / "x").mkdir()
    tiny_tasks("w9out", data_dir)
    yml = tmp_path / "tasks" / "w9out" / "task.yaml"
    needle = f"task 'w9out': data.dir '{data_dir}' points outside the data root"

    code, out, err = cli(monkeypatch, capsys, "data", "verify", "w9out", "--data-root", str(root), "--no-progress")
    assert code == 1
    line = the_line(out + err, needle)
    assert str(yml) in line and "ln -s" in line

    results = tmp_path / "results"
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--tasks", "w9out", "--data-root", str(root), "--results", str(results), "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert code == 1 and the_line(err, needle).startswith("FAIL  lvmmed/resnet18/random-init/w9out/")
    assert not results.exists() or not list(results.rglob("*.json"))

    code, out, err = cli(monkeypatch, capsys, "tasks", "--data-root", str(root))
    assert code == 0 and "error: task 'w9out': data.dir" in the_line(out, "w9out"), "the listing goes on, the row says why"


def test_data_linked_into_the_data_root_is_accepted(tiny_tasks, tmp_path, monkeypatch, capsys):
    """The fix the refusal names: a symlink inside the data root is the user's explicit choice."""
    outside = write_class_folders(tmp_path / "elsewhere")
    root = tmp_path / "data"
    root.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    tiny_tasks("w9link", "linked")
    code, out, err = cli(monkeypatch, capsys, "data", "verify", "w9link", "--data-root", str(root), "--no-progress")
    assert code == 0, out + err


def test_ood_dir_outside_the_data_root_is_refused(tmp_path):
    from lvmbench.data.task_data import dataset_root
    from lvmbench.tasks import get_task

    spec = get_task("drive_chase_ood")
    bad = spec.model_copy(deep=True)
    bad.ood[0].dir = "../../etc"
    with pytest.raises(DataError) as e:
        dataset_root(bad, tmp_path)
    assert "task 'drive_chase_ood': ood[0].dir" in str(e.value) and "'../../etc' points outside the data root" in str(e.value)
    assert dataset_root(spec, tmp_path) == tmp_path / spec.data.dir
