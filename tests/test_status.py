"""``lvmbench status`` (issue 16): done / stale / running / failed / missing per encoder x task, dead
claims shown and cleared; the runner's failure records behind the "failed" column."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from builders import task_folder, tiny_task_dir, write_class_folders
from cli_helpers import cli

from lvmbench.failures import failure_path, note_failure, read_failure
from lvmbench.launch.status import collect
from lvmbench.results import result_path
from lvmbench.runner import EvalRequest, plan, run
from lvmbench.spec import RunOptions

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS3 = ["brain_tumor_linear", "fgadr_linear", "retinamnist_linear"]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def grid(tmp_path, synth_root, cache_dir):
    """Two finished knn units (one made stale), one failed, one claimed by this process, dead and
    foreign claims, and a claim of a Slurm job on another node."""
    results = tmp_path / "r"
    req = EvalRequest(encoder="resnet18", suite="smoke", tasks=TASKS3[:2], protocols=["knn"], data_root=synth_root, results=results,
                      cache_dir=cache_dir, run=RunOptions(progress=False, workers=0))
    assert run(req, log=lambda s: None).ok
    units = {p.unit.task_id + "/" + p.unit.protocol_tag: p.unit for p in plan(EvalRequest(encoder="resnet18", suite="smoke", tasks=TASKS3, protocols=["knn", "linear"], heads=["linear", "mlp", "tversky"], results=results))[0]}
    stale = result_path(results, units["fgadr_linear/knn"])
    doc = json.loads(stale.read_text(encoding="utf-8"))
    doc["identity"]["split"] = "0" * 16  # as if the split changed since it ran
    stale.write_text(json.dumps(doc), encoding="utf-8")
    note_failure(results, units["retinamnist_linear/linear"], "DataError: /data/x.png: unreadable image; fix: re-download it")
    lock = lambda key: result_path(results, units[key]).with_name(result_path(results, units[key]).name + ".lock")  # noqa: E731
    for key, owner in (("retinamnist_linear/knn", {"pid": os.getpid(), "host": socket.gethostname()}),
                       ("brain_tumor_linear/linear-mlp", {"pid": dead_pid(), "host": socket.gethostname()}),
                       ("fgadr_linear/linear-mlp", {"pid": 7, "host": "node7", "job": "1000_3"})):
        lock(key).parent.mkdir(parents=True, exist_ok=True)
        lock(key).write_text(json.dumps(owner), encoding="utf-8")
    lock("brain_tumor_linear/linear-tversky").write_text("somebody else's file", encoding="utf-8")
    return results, units, lock


def test_status_shows_each_state_with_its_detail(monkeypatch, capsys, tmp_path, grid, synth_root, cache_dir):
    from fake_slurm import install, update_task

    results, units, lock = grid
    for k, v in install(tmp_path / "slurm").items():
        monkeypatch.setenv(k, v)
    update_task("1000_3", state="RUNNING", runs=1, job_id="1004", array=True)
    update_task("1000_4", state="PENDING", runs=0, job_id="1005", array=True)
    queued = result_path(results, units["retinamnist_linear/linear-tversky"]).relative_to(results).as_posix()
    (results / "_jobs" / "1000").mkdir(parents=True)
    (results / "_jobs" / "1000" / "units.json").write_text(json.dumps({"job": "1000", "tasks": {"1000_4": [queued]}}), encoding="utf-8")
    g = collect(results, "smoke", data_root=synth_root, cache_dir=cache_dir)
    state = {k.split("/", 3)[3]: u.state for k, u in g.units.items()}
    assert state == {
        "brain_tumor_linear/knn-s0.json": "done",
        "fgadr_linear/knn-s0.json": "stale",
        "retinamnist_linear/linear-s0.json": "failed",
        "retinamnist_linear/knn-s0.json": "running",
        "fgadr_linear/linear-mlp-s0.json": "running",  # Slurm still runs job 1000_3 on node7
        "brain_tumor_linear/linear-mlp-s0.json": "missing",  # only a dead claim there
        "brain_tumor_linear/linear-tversky-s0.json": "missing",
        "retinamnist_linear/linear-tversky-s0.json": "missing",  # submitted, still queued
    }
    code, out, err = cli(monkeypatch, capsys, "status", "--results", str(results), "--data-root", str(synth_root), "--cache-dir", str(cache_dir))
    assert code == 0, err
    lines = out.splitlines()
    assert [ln.split()[1:] for ln in lines if ln.startswith("total")] == [["1", "1", "0", "2", "1", "3"]]
    line = lambda needle: next(ln for ln in lines if needle in ln)  # noqa: E731
    assert f"host {socket.gethostname()}, pid {os.getpid()}, claimed" in line("running   smoke/resnet18/random-init/retinamnist_linear/knn")
    assert "host node7, pid 7, job 1000_3" in line("fgadr_linear/linear-mlp") and "Slurm job 1000_3 running" in line("fgadr_linear/linear-mlp")
    assert "unreadable image; fix: re-download it" in line("failed    smoke/resnet18/random-init/retinamnist_linear/linear-s0")
    assert "split changed since it ran" in line("stale     smoke/resnet18/random-init/fgadr_linear/knn")
    assert "on this host is gone" in line("linear-mlp-s0.json.lock") and "--clear-stale" in line("linear-mlp-s0.json.lock")
    assert "not an lvmbench claim" in line("linear-tversky-s0.json.lock")
    assert "Slurm array task 1000_4 pending" in line("missing   smoke/resnet18/random-init/retinamnist_linear/linear-tversky")
    assert "job 1000: 1 array task(s), 1 unit(s)" in out

    # the plan of an encoder adds what is missing; --no-check leaves identities unchecked
    code, out, _ = cli(monkeypatch, capsys, "status", "--results", str(results), "--suite", "smoke", "--encoder", "resnet18", "--tasks", ",".join(TASKS3),
                       "--protocol", "knn,linear", "--head", "linear,mlp,tversky", "--no-check")
    total = next(ln for ln in out.splitlines() if ln.startswith("total")).split()[1:]
    assert code == 0 and total == ["0", "0", "2", "2", "1", "7"], out  # 12 planned: 2 results, 2 running, 1 failed

    # the Slurm job ended: its claim is dead too; --clear-stale removes both dead claims, nothing else
    update_task("1000_3", state="COMPLETED")
    code, out, _ = cli(monkeypatch, capsys, "status", "--results", str(results), "--no-check", "--clear-stale")
    assert code == 0 and "Slurm job 1000_3 has ended" in out and out.count("cleared ") == 2, out
    assert not lock("brain_tumor_linear/linear-mlp").exists() and not lock("fgadr_linear/linear-mlp").exists()
    assert lock("retinamnist_linear/knn").exists()  # a live claim stays
    assert lock("brain_tumor_linear/linear-tversky").read_text(encoding="utf-8") == "somebody else's file"  # not ours: untouched


def test_status_of_an_empty_tree(monkeypatch, capsys, tmp_path):
    code, out, _ = cli(monkeypatch, capsys, "status", "--results", str(tmp_path / "none"))
    assert code == 0 and "no results, claims or planned units" in out
    code, _, err = cli(monkeypatch, capsys, "status", "--results", str(tmp_path / "none"), "--suite", "smok")  # a typo: not an empty grid
    assert code == 2 and "did you mean 'smoke'" in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    with task_folder(monkeypatch, tmp_path, tiny_task_dir(tmp_path / "tasks", "st", "st_data")):
        yield tmp_path


def test_runner_records_a_failure_and_clears_it_when_the_unit_succeeds(tiny):
    req = EvalRequest(encoder="resnet18", tasks=["st"], protocols=["knn"], data_root=tiny / "data", results=tiny / "r", run=RunOptions(progress=False, workers=0))
    s = run(req, log=lambda s: None)  # no data yet: the unit fails
    (unit,) = [p.unit for p in plan(req)[0]]
    rec = read_failure(failure_path(result_path(req.results, unit)))
    assert s.failed == [unit.key()] and rec is not None
    assert rec["unit"] == unit.key() and "st_data" in rec["error"] and rec["pid"] == os.getpid() and "\n" not in rec["error"]
    write_class_folders(tiny / "data" / "st_data")
    assert run(req, log=lambda s: None).done == [unit.key()]
    assert not failure_path(result_path(req.results, unit)).exists()
    # a file lvmbench did not write at that name is never replaced
    failure_path(result_path(req.results, unit)).write_text("notes", encoding="utf-8")
    note_failure(req.results, unit, "boom")
    assert failure_path(result_path(req.results, unit)).read_text(encoding="utf-8") == "notes"
