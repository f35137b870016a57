"""Crash safety under real processes: `lvmbench eval` SIGKILLed while a unit runs and right after a
result is written, then finished by two concurrent reruns, ends with every unit present exactly
once (each computed by one process) and a valid leaderboard; a writer killed mid-write never leaves
a partial result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from builders import tiny_task_dir, write_class_folders

from lvmbench.results import iter_results

UNITS = sorted(f"lvmmed/resnet18/random-init/w8ok/{p}-s{s}.json" for p in ("knn", "linear") for s in (0, 1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    tiny_task_dir(base / "tasks", "w8ok", "w8ok")
    write_class_folders(base / "data" / "w8ok")
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(base / "tasks"), "LVMBENCH_CACHE": str(base / "cache"), "OMP_NUM_THREADS": "1"}
    return base, env


def eval_cmd(base: Path, results: Path) -> list[str]:
    return [
        sys.executable, "-m", "lvmbench.cli", "eval", "--encoder", "resnet18", "--suite", "lvmmed", "--tasks", "w8ok",
        "--protocol", "knn,linear", "--seeds", "0,1", "--data-root", str(base / "data"), "--results", str(results),
        "--no-progress", "--workers", "0",
    ]  # fmt: skip


class Run:
    """A child ``lvmbench eval`` whose stderr lines are collected as they come."""

    def __init__(self, cmd: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def kill_when(self, condition, timeout: float = 240.0) -> bool:
        """SIGKILL as soon as ``condition()`` holds; False if the run ended first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            if condition():
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self._t.join(5)
                return True
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError("condition never held")

    def finish(self, timeout: float = 300.0) -> int:
        rc = self.proc.wait(timeout)
        self._t.join(5)
        return rc


def tree_is_sound(results: Path) -> list[str]:
    """Every result file parses and sits at its unit's path; returns the units present."""
    found = []
    for path, rec in iter_results(results):
        assert not isinstance(rec, Exception), rec
        found.append(path.relative_to(results).as_posix())
    return found


def test_sigkill_then_rerun_completes_every_unit_once(setup, tmp_path, monkeypatch):
    base, env = setup
    results = tmp_path / "results"
    cmd = eval_cmd(base, results)

    # 1. killed while the first unit runs (its claim is held, nothing written yet)
    r = Run(cmd, env)
    assert r.kill_when(lambda: any(results.rglob("*.lock")))
    assert len(tree_is_sound(results)) <= 1  # at most a unit that finished within the polling interval

    # 2. killed right after a result landed (the rerun takes over the dead process's claims)
    r = Run(cmd, env)
    n_before = len(tree_is_sound(results))
    assert r.kill_when(lambda: len(list(results.rglob("*.json"))) > n_before)
    partial = tree_is_sound(results)
    assert 1 <= len(partial) < len(UNITS)

    # 3. two concurrent reruns finish the tree: each remaining unit computed by exactly one of
    #    them (the other skips it as busy or done), every unit present once
    first, second = Run(cmd, env), Run(cmd, env)
    assert first.finish() == 0 and second.finish() == 0, "\n".join(first.lines + second.lines)
    done = sorted(ln.split()[1] for ln in first.lines + second.lines if ln.startswith("done  "))
    assert done == sorted(set(UNITS) - set(partial)), "no unit computed twice, none lost"
    assert sorted(tree_is_sound(results)) == UNITS
    assert not list(results.rglob("*.lock")), "finished runs release their claims"
    from lvmbench.leaderboard import build
    from lvmbench.tasks import TASKS

    monkeypatch.setenv("LVMBENCH_TASK_PATH", env["LVMBENCH_TASK_PATH"])  # the task the children ran
    TASKS.reset()
    problems: list[str] = []
    try:
        text = build(results, warn=problems.append, n_boot=200)
    finally:
        TASKS.reset()
    assert not problems and text.count("(n=2)") == 2


_WRITER = """
import json, sys
from pathlib import Path
from lvmbench.results import write_atomic
p = Path(sys.argv[1])
i = json.loads(p.read_text())["i"] + 1 if p.exists() else 0
while True:
    write_atomic(p, json.dumps({"i": i, "pad": "x" * 400000}))
    i += 1
"""


def test_a_writer_killed_mid_write_leaves_old_or_new_file(tmp_path):
    target = tmp_path / "r" / "unit.json"
    seen = set()
    for delay in (0.0, 0.02, 0.05, 0.12, 0.3):
        before = json.loads(target.read_text(encoding="utf-8"))["i"] if target.exists() else -1
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)])
        start = time.monotonic()
        while time.monotonic() - start < 60:  # until this writer has replaced the file once
            if target.exists() and json.loads(target.read_text(encoding="utf-8"))["i"] > before:
                break
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        doc = json.loads(target.read_text(encoding="utf-8"))  # never a partial file
        assert len(doc["pad"]) == 400000
        seen.add(doc["i"])
    assert len(seen) > 1, "the writers got through several writes before their kills"


def test_claims_without_flock_fall_back_to_exclusive_lock_files(tmp_path, monkeypatch):
    """Filesystems without flock (some network mounts): O_EXCL lock files with the owner's pid."""
    import errno
    import fcntl
    import socket

    from lvmbench.results import Claim

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    target = tmp_path / "unit.json"
    a, b = Claim(target), Claim(target)
    assert a.acquire() and not b.acquire(), "a live owner keeps its claim"
    assert json.loads(a.lock.read_text(encoding="utf-8"))["pid"] == os.getpid()
    a.release()
    assert not a.lock.exists() and b.acquire()
    b.release()
    # a claim of a dead process on this host is taken over; an empty fresh one is not (its owner
    # may be between creating and writing it)
    a.lock.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}), encoding="utf-8")
    assert Claim(target).acquire()
    a.lock.write_text("", encoding="utf-8")
    assert not Claim(target).acquire()
    os.utime(a.lock, (time.time() - 3600, time.time() - 3600))
    assert Claim(target).acquire(), "an empty lock file an hour old was left by a killed process"
