"""``pretrain --resume`` on a run folder that was damaged or hand-edited: one line naming the file and
the fix, nothing in the folder rewritten; a log line a crash cut short does not stop the resume."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from pretrain_helpers import config, write_images

from lvmbench.errors import UserError
from lvmbench.pretrain.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 3-step SimCLR run stopped after step 1, checkpointed there."""
    root = tmp_path_factory.mktemp("stopped")
    images = write_images(root / "images", 16)
    cfg = config(images, root / "run", steps=3, batch_size=8, objective="simclr", checkpoint_every=1, stop_at=1)
    train(cfg)
    return images, root / "run"


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


class _Payload:
    def __reduce__(self):
        return (print, ("a pickle that runs code when loaded",))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda out: (out / "checkpoint.pt").write_bytes(b""), "checkpoint.pt cannot be read (EOFError)"),
        (lambda out: (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:1000]), "checkpoint.pt cannot be read (PytorchStreamReader"),
        (lambda out: torch.save({"step": "x"}, out / "checkpoint.pt"), "checkpoint.pt is not one of lvmbench pretrain's (no objective, optimizer"),
        (lambda out: torch.save([1, 2], out / "checkpoint.pt"), "checkpoint.pt is not one of lvmbench pretrain's"),
        (lambda out: (out / "checkpoint.pt").write_bytes(pickle.dumps(_Payload(), protocol=2)), "checkpoint.pt cannot be read (Weights only load failed"),
        (lambda out: (out / "pretrain.json").write_text("{", encoding="utf-8"), "pretrain.json is missing, unreadable or has no data.manifest"),
        (lambda out: (out / "pretrain.json").write_text('{"data": {}}', encoding="utf-8"), "pretrain.json is missing, unreadable or has no data.manifest"),
        (lambda out: (out / "pretrain.json").unlink(), "pretrain.json is missing"),
    ],
    ids=["empty", "truncated", "foreign-dict", "foreign-list", "pickle", "broken-json", "no-manifest", "no-pretrain-json"],
)
def test_a_damaged_run_folder_is_one_line_and_left_as_it_is(stopped_run, tmp_path, damage, message, capsys):
    images, run = stopped_run
    out = _copy(run, tmp_path)
    damage(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError) as e:
        train(config(images, out, steps=3, batch_size=8, objective="simclr", checkpoint_every=1, resume=True))
    assert message in str(e.value) and "\n" not in str(e.value) and "another --out" in e.value.fix
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert "runs code" not in capsys.readouterr().out


def test_a_log_line_cut_short_by_a_crash_does_not_stop_the_resume(stopped_run, tmp_path):
    images, run = stopped_run
    out = _copy(run, tmp_path)
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 2, "lo')  # the write a kill interrupted
    train(config(images, out, steps=3, batch_size=8, objective="simclr", checkpoint_every=1, resume=True))
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert steps == [0, 1, 2]
    assert json.loads((out / "pretrain.json").read_text(encoding="utf-8"))["steps_done"] == 3
