"""Bad-input catalogue, round 3 (issue 24): what the runner and the command line themselves owe a
user — every generation of a replaced result kept, the name that is in the way named, a Ctrl-C at
any moment ending with one line and exit 130, every input that moves a number in the identity."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import eval_rt, the_line

from lvmbench.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")


def _hand_edit(path: Path, note: str) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["primary"] = float("nan")  # unreadable as lvmbench's: recomputed, and the file set aside
    doc["my_note"] = note
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_a_result_replaced_twice_keeps_both_older_generations(tiny, monkeypatch, capsys):
    """Only one ``.replaced`` was kept: a hand-annotated result that went stale twice was lost while
    the second rerun printed the same "the old file is kept" line."""
    assert eval_rt(monkeypatch, capsys, tiny)[0] == 0
    (path,) = list((tiny / "results").rglob("*.json"))
    _hand_edit(path, "first")
    code, _, err = eval_rt(monkeypatch, capsys, tiny)
    assert code == 0 and "kept as knn-s0.json.replaced" in the_line(err, "redo")
    _hand_edit(path, "second")
    code, _, err = eval_rt(monkeypatch, capsys, tiny)
    assert code == 0 and "kept as knn-s0.json.replaced.1" in the_line(err, "redo")
    notes = {p.name: json.loads(p.read_text(encoding="utf-8")).get("my_note") for p in path.parent.glob("knn-s0.json.replaced*")}
    assert notes == {"knn-s0.json.replaced": "first", "knn-s0.json.replaced.1": "second"}


def test_a_folder_in_the_way_of_the_aside_name_is_skipped_not_blamed_on_the_result(tiny, monkeypatch, capsys):
    assert eval_rt(monkeypatch, capsys, tiny)[0] == 0
    (path,) = list((tiny / "results").rglob("*.json"))
    (path.parent / "knn-s0.json.replaced").mkdir()
    _hand_edit(path, "kept")
    code, _, err = eval_rt(monkeypatch, capsys, tiny)
    assert code == 0, err
    assert json.loads((path.parent / "knn-s0.json.replaced.1").read_text(encoding="utf-8"))["my_note"] == "kept"
    assert (path.parent / "knn-s0.json.replaced").is_dir()


def _interrupt_after(seconds: float, args: list[str], env: dict) -> subprocess.CompletedProcess:
    # a job started in the background (`cmd &`, as a CI runner may) ignores SIGINT, and its children
    # inherit that: the command gets the terminal's default, as a user's Ctrl-C finds it
    proc = subprocess.Popen([sys.executable, "-c", "from lvmbench.cli import main; main()", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("seconds", [0.8, 3.0])
def test_ctrl_c_at_any_moment_of_eval_is_one_line_and_exit_130(tiny, seconds):
    """A Ctrl-C while the command line was still importing gave a KeyboardInterrupt traceback; one
    during planning exited 130 without a word."""
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(tiny / "tasks"), "LVMBENCH_SPLITS": str(tiny / "splits"), "LVMBENCH_CACHE": str(tiny / "cache"), "PYTHONUNBUFFERED": "1"}
    args = ["eval", "--encoder", "resnet18", "--suite", "smoke", "--results", str(tiny / "results"), "--no-progress", "--workers", "0"]
    done = _interrupt_after(seconds, args, env)
    if done.returncode == 0:
        pytest.skip("the run finished before the Ctrl-C (a very fast machine)")
    if done.returncode == -signal.SIGINT and "lvmbench" not in done.stderr:
        pytest.skip("the Ctrl-C came while Python itself was starting (a loaded machine), before any lvmbench code")
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "interrupted" in done.stderr


def test_amp_is_part_of_a_results_identity():
    """``--amp`` (bf16 autocast) changes what is computed; a result of an amp run is not current for
    a run without it, and the other run options (threads, workers, compile) are not identity."""
    from lvmbench.identity import differences, unit_identity
    from lvmbench.spec import RunOptions

    task = TASKS.get("brain_tumor_linear")
    from lvmbench.spec import RunUnit

    unit = RunUnit(suite="lvmmed", task_id=task.id, protocol="knn", encoder="resnet18", weights_sha256="random-init")
    base = dict(task=task, unit=unit, settings=task.settings("knn"), eval_code="2.1.1", split_hash="s", data_fingerprint="d", train_subset="t")
    plain = unit_identity(**base, run=RunOptions().identity())
    assert plain == unit_identity(**base, run=RunOptions(threads=3, workers=2, compile=True, deterministic=True).identity())
    assert "run" not in plain  # results of runs without --amp keep the identity they had
    assert differences(plain, unit_identity(**base, run=RunOptions(amp=True).identity())) == ["run"]


def test_an_edited_ood_label_file_changes_the_data_fingerprint(synth_root, tmp_path):
    """The OOD test sets (CHASE for DRIVE, the prostate sites) build the primary metric
    (``dice_avg``) but were not in the fingerprint: an edited label file left old results current."""
    from lvmbench.data.fingerprint import data_fingerprint
    from lvmbench.data.task_data import load_task_data

    root = tmp_path / "data"
    shutil.copytree(synth_root, root, symlinks=True)
    spec = TASKS.get("drive_chase_ood").for_suite("smoke")
    data = load_task_data(spec, root, suite="smoke")
    assert data.ood and data.ood[0].cases
    before = data_fingerprint(data)
    ood = data.ood[0]
    target = ood.reader.root / next(f for f in ood.cases[0].files if f != ood.cases[0].image)
    target.write_bytes(target.read_bytes()[:-1] + b"\x01")  # one byte of a label file, same size
    assert data_fingerprint(load_task_data(spec, root, suite="smoke")) != before
    removed = ood.reader.root / ood.cases[-1].image
    removed.unlink()  # a case gone from the OOD set
    assert data_fingerprint(load_task_data(spec, root, suite="smoke")) != before
