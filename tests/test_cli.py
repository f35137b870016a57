"""The command line as a user runs it: one-line errors, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest


def lvmbench(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "lvmbench.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_tasks_lists_the_registry():
    r = lvmbench("tasks")
    assert r.returncode == 0, r.stderr
    assert "brain_tumor_linear" in r.stdout and "classification" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "--encoder", "resnet18", "--tasks", "brain-tumor_linear", "--suite", "smoke"], "did you mean 'brain_tumor_linear'"),
        (["eval", "--encoder", "resnet5O", "--suite", "smoke"], "did you mean 'resnet50'"),
        (["eval", "--encoder", "resnet18", "--suite", "smok"], "did you mean 'smoke'"),
        (["eval", "--encoder", "resnet18", "--weights", "/nonexistent/w.pth", "--suite", "smoke"], "/nonexistent/w.pth"),
        (["eval", "--encoder", "resnet18", "--seeds", "a,b"], "--seeds"),
        (["eval", "--encoder", "resnet18", "--shard", "5/2"], "--shard"),
    ],
)
def test_user_errors_are_one_line(args, needle, tmp_path):
    r = lvmbench(*args, "--results", str(tmp_path / "r"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert needle in err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


def test_missing_data_root_fails_unit_with_one_line(tmp_path):
    r = lvmbench("eval", "--encoder", "resnet18", "--tasks", "brain_tumor_linear", "--protocol", "knn", "--data-root", str(tmp_path / "nowhere"), "--results", str(tmp_path / "r"), "--no-progress")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    fail = [line for line in r.stderr.splitlines() if line.startswith("FAIL")]
    assert fail and "BrainTumor" in fail[0] and "fix:" in fail[0]
    assert not list((tmp_path / "r").rglob("*.json")), "nothing written for a failed unit"
