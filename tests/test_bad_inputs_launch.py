"""Bad inputs, round 3: launchers and messages.

- Ctrl-C while ``--launcher local`` starts its workers: exit 130, no traceback, no failure records
  (it gave two KeyboardInterrupt tracebacks, exit 1 and a ``.failed`` record per bundle);
- ``status --clear-stale`` that cannot remove a dead claim (read-only results tree) says so and
  exits non-zero (it exited 0, silently);
- the Slurm ``--dry-run`` quotes the job folder, so a path with spaces can be pasted;
- a plugin encoder that fails to import is reported with its import error, not as "no encoder".
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from builders import tiny_task_dir, write_class_folders
from cli_helpers import cli, the_line

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def test_ctrl_c_while_local_workers_start_exits_130_without_failure_records(tmp_path):
    tiny_task_dir(tmp_path / "tasks", "w8ok", "w8ok")
    write_class_folders(tmp_path / "data" / "w8ok")
    results = tmp_path / "results"
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(tmp_path / "tasks"), "LVMBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lvmbench.cli", "eval", "--encoder", "resnet18", "--suite", "lvmmed", "--tasks", "w8ok", "--protocol", "knn,linear",
           "--seeds", "0,1", "--data-root", str(tmp_path / "data"), "--results", str(results), "--no-progress",
           "--launcher", "local", "--jobs", "2", "--bundle", "1"]  # fmt: skip
    # its own process group, as a terminal's foreground job: Ctrl-C reaches the launcher and its workers
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(ln.rstrip("\n") for ln in proc.stderr), daemon=True)  # type: ignore[union-attr]
    reader.start()
    end = time.monotonic() + 240
    while not any(ln.startswith("local: ") for ln in lines) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    assert proc.poll() is None, "\n".join(lines)
    time.sleep(0.3)  # the workers are still importing torch
    os.killpg(proc.pid, signal.SIGINT)
    try:
        rc = proc.wait(180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(5)
    err = "\n".join(lines)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "FAIL" not in err, err
    assert "interrupted:" in err and "0 failed" in err
    assert not list(results.rglob("*.failed")), "an interrupted unit is not a failed one"


def _dead_claim(results: Path) -> Path:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    lock = results / "smoke" / "resnet18" / "random-init" / "brain_tumor_linear" / "knn-s0.json.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": p.pid, "host": socket.gethostname()}), encoding="utf-8")
    return lock


def test_clear_stale_on_a_read_only_tree_says_it_removed_nothing(monkeypatch, capsys, tmp_path):
    from lvmbench.errors import UserError
    from lvmbench.results import Claim

    results = tmp_path / "r"
    lock = _dead_claim(results)
    code, out, _ = cli(monkeypatch, capsys, "status", "--results", str(results), "--no-check")
    assert code == 0 and "dead claim" in out and "remove with --clear-stale" in out, out

    # a read-only mount (EROFS: root cannot write either): the folder is not writable, the lock cannot be opened for writing
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == lock.parent and mode & os.W_OK else real_access(p, mode, **kw))

    def erofs(self):
        raise UserError("cannot use the unit's lock file (Read-only file system)", path=self.lock, fix="remove it")

    monkeypatch.setattr(Claim, "acquire", erofs)
    code, out, err = cli(monkeypatch, capsys, "status", "--results", str(results), "--no-check", "--clear-stale")
    line = the_line(err, "--clear-stale")
    assert code == 2 and "removed 0 of 1 dead claim(s)" in line and str(lock) in line and "not writable" in line and "fix: " in line, err
    assert lock.exists()


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")
def test_clear_stale_in_a_folder_without_write_permission(monkeypatch, capsys, tmp_path):
    results = tmp_path / "r"
    lock = _dead_claim(results)
    lock.parent.chmod(0o555)
    try:
        code, _, err = cli(monkeypatch, capsys, "status", "--results", str(results), "--no-check", "--clear-stale")
    finally:
        lock.parent.chmod(0o755)
    assert code == 2 and "removed 0 of 1 dead claim(s)" in the_line(err, "--clear-stale") and lock.exists()


def test_slurm_dry_run_quotes_the_job_folder(monkeypatch, capsys, tmp_path):
    pytest.importorskip("submitit")
    results = tmp_path / "my results" / "r"
    args = ["eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "brain_tumor_linear", "--protocol", "knn", "--results", str(results),
            "--launcher", "slurm", "--dry-run"]  # fmt: skip
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    srun = next(ln for ln in out.splitlines() if ln.startswith("srun "))
    words = shlex.split(srun)
    assert words[-1] == f"{results.absolute()}/_jobs/%A" and words[-5:-1] == [sys.executable, "-u", "-m", "submitit.core._submit"], srun
    assert not results.exists()
    monkeypatch.setitem(sys.modules, "submitit", None)  # without submitit: the folder is shown, quoted, too
    code, out, _ = cli(monkeypatch, capsys, *args)
    assert code == 0 and f"# job folder: {shlex.quote(str(results.absolute()) + '/_jobs/%A')}" in out, out


def test_a_plugin_encoder_that_fails_to_import_is_reported_with_its_error(monkeypatch, capsys, tmp_path):
    site = tmp_path / "site"
    (site / "boom_plugin").mkdir(parents=True)
    (site / "boom_plugin" / "__init__.py").write_text("import torchvision_that_is_not_installed\n", encoding="utf-8")
    dist = site / "boom_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: boom_plugin\nVersion: 0.1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[lvmbench.encoders]\nboom = boom_plugin:build\nresnet34 = boom_plugin:build_resnet\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    from lvmbench.encoders import ENCODERS

    monkeypatch.setattr(ENCODERS, "_broken", {})
    monkeypatch.setattr(ENCODERS, "_loaded", False)  # discover again, with the plugin on the path
    for name in ("boom", "resnet34"):  # resnet34 is also a torchvision name: the broken plugin is not silently replaced by it
        code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", name, "--suite", "smoke", "--results", str(tmp_path / "r"), "--dry-run")
        line = the_line(err, "error:")
        assert code == 2 and f"plugin encoder '{name}' from boom_plugin 0.1.0 failed to load (ModuleNotFoundError" in line, err
        assert "no encoder" not in line and "fix: fix or reinstall that package" in line
    assert not (tmp_path / "r").exists()
