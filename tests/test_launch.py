"""Launchers (issue 16): bundles, option checks, the dry run, local worker processes and a Slurm job
array through a fake Slurm (tests/fake_slurm.py) with a preemption that requeues a detection unit."""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import cli

from lvmbench.launch.options import parse_time
from lvmbench.launch.units import bundles
from lvmbench.runner import EvalRequest, plan


def cli_fd(monkeypatch, capfd, *args: str) -> tuple[int, str, str]:
    """The CLI in-process, with output captured at the file-descriptor level (worker processes
    write there, not through this process's sys.stderr)."""
    return cli(monkeypatch, capfd, *args)


def result_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json") if not p.relative_to(root).parts[0].startswith("_"))


def test_bundles_keep_long_units_alone_and_group_short_ones(tmp_path):
    planned, _ = plan(EvalRequest(encoder="resnet18", suite="smoke", results=tmp_path))
    items = bundles(planned, size=3)
    keys = [p.unit.key() for b in items for p in b]
    assert sorted(keys) == sorted(p.unit.key() for p in planned)  # every unit exactly once
    short = sorted(p.unit.key() for p in planned if p.unit.protocol in {"knn", "linear"})
    for b in items:
        if {p.unit.protocol for p in b} & {"detection", "seg2d", "seg3d", "finetune"}:
            assert len(b) == 1
        else:
            assert len(b) <= 3 and [p.unit.key() for p in b] == short[short.index(b[0].unit.key()):][: len(b)]  # consecutive
    assert sum(1 for b in items if b[0].unit.protocol in {"knn", "linear"}) == -(-len(short) // 3)
    assert items[0][0].unit.protocol == "detection"  # longest first: the last to start is short
    assert all(p.unit.protocol in {"knn", "linear"} for p in items[-1])


@pytest.mark.parametrize("text,minutes", [("90", 90), ("30:30", 31), ("4:00:00", 240), ("1-00:00", 1440), ("2-12", 3600), ("0:10", 1)])
def test_slurm_time_formats(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--jobs", "2"], "--jobs applies to --launcher local"),
        (["--partition", "gpu"], "--partition applies to --launcher slurm"),
        (["--launcher", "local", "--partition", "gpu", "--jobs", "2"], "--partition applies to --launcher slurm"),
        (["--launcher", "local"], "needs --jobs N"),
        (["--launcher", "local", "--jobs", "0"], "--jobs 0"),
        (["--launcher", "local", "--devices", "0,x"], "not a list of GPU indices"),
        (["--launcher", "slurm", "--mem-gb", "0"], "--mem-gb 0.0"),
        (["--launcher", "slurm", "--time", "soon"], "--time 'soon' is not a Slurm time"),
        (["--launcher", "slurm", "--sbatch", "qos"], "--sbatch 'qos' is not KEY=VALUE"),
        (["--launcher", "cloud"], "--launcher 'cloud' is not a launcher"),
        (["--launcher", "local", "--jobs", "-1"], "--jobs -1"),
        (["--bundle", "4"], "--bundle applies to --launcher local or slurm"),
        (["--launcher", "local", "--jobs", "100000"], "--jobs 100000"),
        (["--launcher", "local", "--jobs", "two"], "Invalid value for '--jobs'"),
        (["--launcher", "local", "--jobs", str(len(os.sched_getaffinity(0)) + 1)], "CPU core(s)"),
        (["--launcher", "local", "--jobs", "1", "--bundle", "0"], "--bundle 0"),
        (["--launcher", "local", "--devices", "0,0"], "give each GPU index once"),
        (["--launcher", "slurm", "--partition", "gpu a"], "is not a Slurm name"),
        (["--launcher", "slurm", "--account", "lab;true"], "is not a Slurm name"),
        (["--launcher", "slurm", "--time", "0"], "zero, which Slurm reads as no limit"),
        (["--launcher", "slurm", "--time", "99999999"], "more than a year"),
        (["--launcher", "slurm", "--max-parallel", "0"], "--max-parallel 0"),
        (["--launcher", "slurm", "--sbatch", "qos=high\necho hi"], "control character"),
        (["--launcher", "slurm", "--sbatch", "array=0-3"], "the launcher sets --array itself"),
        (["--launcher", "slurm", "--sbatch", "time=10"], "--time sets that"),
    ],
)
def test_bad_launcher_options_are_one_line(monkeypatch, capfd, tmp_path, args, needle):
    code, _, err = cli_fd(monkeypatch, capfd, "eval", "--encoder", "resnet18", "--suite", "smoke", "--results", str(tmp_path / "r"), "--dry-run", *args)
    assert code == 2 and "Traceback" not in err
    assert any(needle in line and "fix:" in line for line in err.splitlines()), err
    assert not (tmp_path / "r").exists()


def test_slurm_without_submitit_or_sbatch_and_an_unwritable_results_tree_are_one_line(monkeypatch, capfd, tmp_path, synth_root):
    base = ["eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "brain_tumor_linear", "--protocol", "knn", "--results", str(tmp_path / "r")]
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the [slurm] extra were not installed
    code, _, err = cli_fd(monkeypatch, capfd, *base, "--launcher", "slurm")
    assert code == 2 and 'pip install -e ".[slurm]"' in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli_fd(monkeypatch, capfd, *base, "--launcher", "slurm", "--dry-run")  # the plan needs no submitit
    assert code == 0 and "dry run: 1 unit(s) in 1 array task(s)" in out and "#SBATCH" not in out and 'pip install -e ".[slurm]"' in out, out + err
    monkeypatch.delitem(sys.modules, "submitit")
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = cli_fd(monkeypatch, capfd, *base, "--launcher", "slurm")
    assert code == 2 and "no sbatch, srun, sacct on PATH" in err and "Traceback" not in err, err
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")  # unwritable for root too
    code, _, err = cli_fd(monkeypatch, capfd, *base[:-1], str(tmp_path / "file"), "--launcher", "local", "--jobs", "1", "--cache-dir", str(tmp_path / "c"), "--data-root", str(synth_root))
    assert code == 2 and "cannot write results there (it is a file, not a folder)" in err and "[w0]" not in err, err
    assert not (tmp_path / "r").exists()


def test_devices_need_a_gpu(monkeypatch, capfd, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = cli_fd(monkeypatch, capfd, "eval", "--encoder", "resnet18", "--suite", "smoke", "--launcher", "local", "--devices", "0,1", "--results", str(tmp_path))
    assert code == 2 and "no usable CUDA device" in err


def test_devices_give_each_worker_one_gpu(monkeypatch):
    import torch

    from lvmbench.errors import UserError
    from lvmbench.launch.local import worker_env
    from lvmbench.launch.options import local_settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a 4-GPU node, as far as the checks can tell
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    s = local_settings(None, "3,1", None, None)
    assert s.jobs == 2 and s.devices == (3, 1)  # --jobs defaults to one worker per listed GPU
    assert [worker_env(i, s)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["3", "1"]
    for jobs, text, needle in ((3, "0,1", "one GPU per worker"), (None, "0,4", "only 4 CUDA device(s)")):
        with pytest.raises(UserError, match=re.escape(needle)):
            local_settings(jobs, text, None, None)
    with pytest.raises(UserError, match="both choose the GPU"):
        local_settings(None, "0", "cpu", None)


def test_slurm_dry_run_prints_the_array_and_sbatch_script_without_submitting(monkeypatch, capfd, tmp_path):
    results = tmp_path / "r"
    code, out, err = cli_fd(
        monkeypatch, capfd, "eval", "--encoder", "resnet18", "--suite", "smoke", "--results", str(results), "--launcher", "slurm", "--dry-run",
        "--partition", "gpu", "--account", "lab", "--gpus-per-task", "1", "--cpus-per-task", "8", "--mem-gb", "32", "--time", "2:00:00",
        "--max-parallel", "4", "--sbatch", "qos=high", "--sbatch", "constraint=a100",
    )
    assert code == 0, err
    m = re.search(r"dry run: (\d+) unit\(s\) in (\d+) array task\(s\); nothing submitted", out)
    assert m, out
    n_units, n_tasks = int(m.group(1)), int(m.group(2))
    assert n_units == len(plan(EvalRequest(encoder="resnet18", suite="smoke", results=results))[0]) and n_tasks < n_units
    for line in (f"#SBATCH --array=0-{n_tasks - 1}%4", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --time=120", "#SBATCH --qos=high", "#SBATCH --constraint=a100",
                 "#SBATCH --signal=USR2@90", f"#SBATCH --output={results.absolute()}/_jobs/%A/%A_%a_0_log.out"):
        assert line in out.splitlines(), (line, out)
    assert "resumes at epoch" in out and "restarts" in out
    assert not results.exists()  # nothing planned was run, submitted or written


def test_local_jobs_2_writes_every_unit_once_and_the_leaderboard_reads_them(monkeypatch, capfd, tmp_path, synth_root, cache_dir):
    results = tmp_path / "r"
    tasks = "brain_tumor_linear,fgadr_linear,retinamnist_linear"
    args = ["eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", tasks, "--protocol", "knn", "--data-root", str(synth_root),
            "--results", str(results), "--cache-dir", str(cache_dir), "--no-progress", "--launcher", "local", "--jobs", "2", "--bundle", "1"]
    from lvmbench.launch import options

    cores = max(2, options.cpu_cores())  # two workers on a one-core machine too
    monkeypatch.setattr(options, "cpu_cores", lambda: cores)
    code, _, err = cli_fd(monkeypatch, capfd, *args)
    assert code == 0, err
    assert "3 done, 0 skipped (already done), 0 busy, 0 failed" in err and "in 3 bundle(s) on 2 worker(s)" in err
    files = result_files(results)
    assert len(files) == 3
    done = Counter(re.findall(r"\[w\d\] done  (\S+)", err))
    assert sorted(done) == sorted(f.relative_to(results).as_posix() for f in files) and set(done.values()) == {1}
    for f in files:
        rt = json.loads(f.read_text(encoding="utf-8"))["runtime"]
        assert rt["launcher"]["kind"] == "local" and rt["launcher"]["worker"] in (0, 1, 2)
        assert rt["torch_threads"] == max(1, cores // 2) and rt["env"]["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert not list(results.rglob("*.lock")) and not list(results.rglob("*.failed"))
    code, _, err = cli_fd(monkeypatch, capfd, *args)  # a rerun finds everything done, starts no worker
    assert code == 0 and "0 done, 3 skipped" in err and "[w" not in err
    code, _, err = cli_fd(monkeypatch, capfd, "leaderboard", "--results", str(results), "--out", str(tmp_path / "lb.md"), "--n-boot", "200")
    assert code == 0, err
    board = (tmp_path / "lb.md").read_text(encoding="utf-8")
    assert all(t in board for t in tasks.split(","))


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    from fake_slurm import install

    pytest.importorskip("submitit")
    for k, v in install(tmp_path / "slurm", slots=3).items():
        monkeypatch.setenv(k, v)


def job_logs(err: str, results: Path, n_tasks: int, n_units: int) -> tuple[str, Path]:
    m = re.search(rf"submitted Slurm job (\d+): {n_tasks} array task\(s\), {n_units} unit\(s\)", err)
    assert m, err
    return m.group(1), results / "_jobs" / m.group(1)


def done_lines(logs: Path) -> Counter:
    return Counter(re.findall(r"^done  (\S+)", "".join(p.read_text(encoding="utf-8") for p in sorted(logs.glob("*_log.err"))), flags=re.M))


def test_slurm_job_array_through_fake_slurm_writes_every_unit_once(monkeypatch, capfd, tmp_path, synth_root, cache_dir, fake_slurm):
    from fake_slurm import read_task

    results = tmp_path / "r"
    code, _, err = cli_fd(
        monkeypatch, capfd, "eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "brain_tumor_linear,fgadr_linear,retinamnist_linear",
        "--protocol", "knn", "--data-root", str(synth_root), "--results", str(results), "--cache-dir", str(cache_dir),
        "--workers", "0", "--no-progress", "--launcher", "slurm", "--wait", "--time", "30", "--partition", "debug", "--bundle", "2",
    )
    assert code == 0, err
    assert "3 done, 0 skipped (already done), 0 busy, 0 failed" in err
    job, logs = job_logs(err, results, 2, 3)  # two array tasks: a bundle of two units, then one
    files = result_files(results)
    assert len(files) == 3
    assert sorted(k for v in json.loads((logs / "units.json").read_text(encoding="utf-8"))["tasks"].values() for k in v) == sorted(f.relative_to(results).as_posix() for f in files)
    script = (logs / f"{job}_submission.sh").read_text(encoding="utf-8")
    assert "#SBATCH --partition=debug" in script and "#SBATCH --time=30" in script and "#SBATCH --array=0-1%2" in script
    done = done_lines(logs)  # every unit computed once, by one array task
    assert sorted(done) == sorted(f.relative_to(results).as_posix() for f in files) and set(done.values()) == {1}
    assert all(read_task(f"{job}_{i}")["runs"] == 1 for i in range(2))  # no task ran twice
    assert sorted(json.loads(f.read_text(encoding="utf-8"))["runtime"]["launcher"]["job"] for f in files) == [f"{job}_0", f"{job}_0", f"{job}_1"]
    assert not list(results.rglob("*.lock")) and not list(results.rglob("*.failed"))
    code, _, err = cli_fd(monkeypatch, capfd, "eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "brain_tumor_linear,fgadr_linear,retinamnist_linear",
                          "--protocol", "knn", "--data-root", str(synth_root), "--results", str(results), "--launcher", "slurm")
    assert code == 0 and "0 done, 3 skipped" in err and "submitted" not in err  # nothing left: nothing submitted


TINY_DET = """\
id: tiny_det
title: tiny detection task for launcher tests
family: detection
modality: synthetic
classes: [WBC, RBC, Platelets]
data: {reader: voc, dir: BCCD}
split: {source: publisher, map: {train: train, val: val, test: test}, group_by: case}
preprocess: {size: 64}
protocols:
  detection: {epochs: 2, batch_size: 4, lr: 0.001, anchor_scale: 4, rpn_proposals_train: 64, rpn_proposals_test: 32, rois_per_image: 32, box_fc: 32, fpn_channels: 32, grad_clip: 5.0}
default_protocols: [detection]
primary_metric: ap50
suites: []
"""


@pytest.fixture
def tiny_det(tmp_path, monkeypatch):
    import numpy as np

    from lvmbench.data.synth.detection import write_voc
    from lvmbench.tasks import TASKS

    write_voc(tmp_path / "data" / "BCCD", np.random.default_rng(0), n=15, h=48, w=64)
    (tmp_path / "tasks" / "tiny_det").mkdir(parents=True)
    (tmp_path / "tasks" / "tiny_det" / "task.yaml").write_text(TINY_DET, encoding="utf-8")
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tmp_path / "tasks"))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))
    TASKS.reset()
    yield tmp_path / "data"
    TASKS.reset()


def test_preempted_detection_unit_requeues_and_resumes_after_its_saved_epoch(monkeypatch, capfd, tmp_path, cache_dir, fake_slurm, tiny_det):
    from fake_slurm import read_task

    # the fake preempts the job (SIGTERM, then USR2) once the unit's first epoch is saved
    monkeypatch.setenv("FAKE_SLURM_PREEMPT_GLOB", str(cache_dir / "resume" / "detection" / "*.pt"))
    monkeypatch.setenv("LVMBENCH_RESUME_EVERY_S", "0")  # save at every epoch boundary (the unit trains for seconds)
    results = tmp_path / "r"
    code, _, err = cli_fd(
        monkeypatch, capfd, "eval", "--encoder", "resnet18", "--tasks", "tiny_det", "--data-root", str(tiny_det), "--results", str(results),
        "--cache-dir", str(cache_dir), "--workers", "0", "--no-progress", "--launcher", "slurm", "--wait",
    )
    assert code == 0, err
    assert "1 done, 0 skipped (already done), 0 busy, 0 failed" in err
    job, logs = job_logs(err, results, 1, 1)
    state = read_task(job)
    assert state["runs"] == 2 and state.get("preempted")  # preempted once, requeued, finished (its result is read above)
    out, log = (logs / f"{job}_0_log.out").read_text(encoding="utf-8"), (logs / f"{job}_0_log.err").read_text(encoding="utf-8")
    assert "this job is preempted" in out and "requeue: job" in log
    key = "lvmmed/resnet18/random-init/tiny_det/detection-s0.json"
    resumed = re.search(rf"detection: resuming {re.escape(key)} after epoch (\d+)", out)
    assert resumed and int(resumed.group(1)) == 1, out  # epoch 1 was not trained again
    assert done_lines(logs) == Counter({key: 1})
    rec = json.loads((results / key).read_text(encoding="utf-8"))
    assert [h["epoch"] for h in rec["extra"]["val_history"]] == [1, 2]
    assert rec["runtime"]["launcher"] == {"kind": "slurm", "host": rec["runtime"]["launcher"]["host"], "job": job}
    assert not list(results.rglob("*.lock")) and not list((cache_dir / "resume").rglob("*.pt"))


def seg3d_args(synth_root, results, cache_dir) -> list[str]:
    return ["eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "brats2018", "--protocol", "seg3d", "--data-root", str(synth_root),
            "--results", str(results), "--cache-dir", str(cache_dir), "--workers", "0", "--no-progress"]


def record_numbers(path: Path) -> tuple:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc["primary"], doc["metrics"], doc["per_case"], doc["extra"]["val_history"], doc["hyperparameters"]["selected"]


def test_seg3d_unit_stopped_after_an_epoch_resumes_there_with_the_same_numbers(monkeypatch, capfd, tmp_path, synth_root, cache_dir, one_thread):
    """Stopped right after its epoch-1 checkpoint (as a preemption would), the rerun trains epochs 2-3
    only and writes what an uninterrupted run writes."""
    from lvmbench import interrupt
    from lvmbench.protocols.resume import Resume

    monkeypatch.setenv("LVMBENCH_RESUME_EVERY_S", "0")
    key = "smoke/resnet18/random-init/brats2018/seg3d-s0.json"
    code, _, err = cli_fd(monkeypatch, capfd, *seg3d_args(synth_root, tmp_path / "plain", cache_dir))
    assert code == 0, err
    save = Resume.save

    def save_then_stop(self, *args):
        save(self, *args)
        interrupt._requested.set()  # the next training step stops the unit, as Ctrl-C or SIGUSR2 would

    monkeypatch.setattr(Resume, "save", save_then_stop)
    code, _, err = cli_fd(monkeypatch, capfd, *seg3d_args(synth_root, tmp_path / "r", cache_dir))
    assert code == 130 and not (tmp_path / "r" / key).exists(), err
    assert len(list((cache_dir / "resume" / "seg3d").glob("*.pt"))) == 1
    monkeypatch.setattr(Resume, "save", save)
    code, out, err = cli_fd(monkeypatch, capfd, *seg3d_args(synth_root, tmp_path / "r", cache_dir))
    assert code == 0, err
    assert f"seg3d: resuming {key} after epoch 1" in out + err
    assert "epoch 1/3" not in err and "epoch 2/3" in err  # --no-progress prints one line per epoch trained
    assert record_numbers(tmp_path / "r" / key) == record_numbers(tmp_path / "plain" / key)
    assert not list((cache_dir / "resume").rglob("*.pt"))  # removed once the unit finished


@pytest.mark.slow
def test_preempted_seg3d_unit_requeues_through_slurm_and_resumes_after_its_saved_epoch(monkeypatch, capfd, tmp_path, synth_root, cache_dir, fake_slurm):
    from fake_slurm import read_task

    monkeypatch.setenv("LVMBENCH_RESUME_EVERY_S", "0")  # a checkpoint at every epoch boundary (default: at most one a minute)
    monkeypatch.setenv("FAKE_SLURM_PREEMPT_GLOB", str(cache_dir / "resume" / "seg3d" / "*.pt"))
    results = tmp_path / "r"
    code, _, err = cli_fd(monkeypatch, capfd, *seg3d_args(synth_root, results, cache_dir), "--launcher", "slurm", "--wait")
    assert code == 0, err
    job, logs = job_logs(err, results, 1, 1)
    assert read_task(job)["runs"] == 2 and read_task(job).get("preempted")
    key = "smoke/resnet18/random-init/brats2018/seg3d-s0.json"
    out, log = (logs / f"{job}_0_log.out").read_text(encoding="utf-8"), (logs / f"{job}_0_log.err").read_text(encoding="utf-8")
    assert "requeue: job" in log and re.search(rf"seg3d: resuming {re.escape(key)} after epoch 1\b", out), out + log
    assert log.count("epoch 1/3") == 1 and log.count("epoch 3/3") == 1  # epoch 1 trained once, before the preemption
    assert done_lines(logs) == Counter({key: 1})
    assert [h["epoch"] for h in json.loads((results / key).read_text(encoding="utf-8"))["extra"]["val_history"]] == [1, 2, 3]
    assert not list(results.rglob("*.lock")) and not list((cache_dir / "resume").rglob("*.pt"))
