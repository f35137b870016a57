"""One resume module for every end-to-end protocol (segmentation, detection, fine-tuning): a unit
stopped after an epoch continues there with the numbers of an uninterrupted run, and a checkpoint
belongs to the unit's result identity — a changed spec (``preprocess.size``) never resumes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import SEG_TASK, write_kvasir
from cli_helpers import cli

from lvmbench import interrupt
from lvmbench.protocols.resume import Resume
from lvmbench.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(folder: Path, size: int, epochs: int = 3) -> None:
    text = SEG_TASK.format(id="rs", reader="kvasir_seg", dims="2d", dir="kv", options='{images: images/*.png, masks: "masks/{name}", threshold: 128}',
                           group_by="case", channels=3, protocol="seg2d", metric="dice")
    text = text.replace("size: 16", f"size: {size}").replace("epochs: 1", f"epochs: {epochs}")
    (folder / "rs").mkdir(parents=True, exist_ok=True)
    (folder / "rs" / "task.yaml").write_text(text, encoding="utf-8")
    TASKS.reset()


@pytest.fixture
def env(tmp_path, monkeypatch):
    write_kvasir(tmp_path / "data" / "kv", n=12)
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tmp_path / "tasks"))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))
    monkeypatch.setenv("LVMBENCH_RESUME_EVERY_S", "0")
    yield tmp_path
    TASKS.reset()


def _eval(monkeypatch, capsys, env: Path, results: str) -> tuple[int, str]:
    code, out, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--tasks", "rs", "--data-root", str(env / "data"),
                         "--results", str(env / results), "--cache-dir", str(env / "cache"), "--workers", "0", "--no-progress")
    return code, out + err


def _stop_after_first_save(monkeypatch) -> None:
    save = Resume.save

    def save_then_stop(self, *args):
        save(self, *args)
        interrupt._requested.set()  # the next training step stops the unit, as Ctrl-C or SIGUSR2 would

    monkeypatch.setattr(Resume, "save", save_then_stop)


def _numbers(path: Path) -> tuple:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc["primary"], doc["metrics"], doc["per_case"], doc["extra"]["val_history"]


def test_a_changed_preprocess_size_never_resumes_the_old_checkpoint(env, monkeypatch, capsys):
    _task(env / "tasks", size=32)
    _stop_after_first_save(monkeypatch)
    code, text = _eval(monkeypatch, capsys, env, "r")
    assert code == 130, text
    (old,) = list((env / "cache" / "resume" / "seg2d").glob("*.pt"))
    monkeypatch.undo()  # real saves again; env vars restored below
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(env / "tasks"))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(env / "splits"))
    _task(env / "tasks", size=48)  # another result identity (spec), so another checkpoint
    code, text = _eval(monkeypatch, capsys, env, "r")
    assert code == 0, text
    assert "resuming" not in text and "epoch 1/3" in text  # trained from the first epoch
    assert old.exists()  # the other identity's checkpoint is not this unit's to use (nor to delete)
    _task(env / "tasks", size=32)  # back to the interrupted identity: now it resumes
    code, text = _eval(monkeypatch, capsys, env, "r2")
    assert code == 0 and "resuming" in text and "after epoch 1" in text, text
    assert not old.exists()


def test_finetune_resumes_after_its_saved_epoch_with_the_uninterrupted_numbers(monkeypatch, capsys, tmp_path, synth_root):
    monkeypatch.setenv("LVMBENCH_RESUME_EVERY_S", "0")
    args = ["eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "retinamnist_finetune", "--data-root", str(synth_root),
            "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-progress"]
    key = "smoke/resnet18/random-init/retinamnist_finetune/finetune-s0.json"
    code, _, err = cli(monkeypatch, capsys, *args, "--results", str(tmp_path / "plain"))
    assert code == 0, err
    _stop_after_first_save(monkeypatch)
    code, _, err = cli(monkeypatch, capsys, *args, "--results", str(tmp_path / "r"))
    assert code == 130 and not (tmp_path / "r" / key).exists(), err
    assert len(list((tmp_path / "cache" / "resume" / "finetune").glob("*.pt"))) == 1
    monkeypatch.undo()
    monkeypatch.setenv("LVMBENCH_RESUME_EVERY_S", "0")
    code, out, err = cli(monkeypatch, capsys, *args, "--results", str(tmp_path / "r"))
    assert code == 0, err
    assert "finetune: resuming" in out + err and "after epoch 1" in out + err
    assert _numbers(tmp_path / "r" / key) == _numbers(tmp_path / "plain" / key)
    assert not list((tmp_path / "cache" / "resume").rglob("*.pt"))
