"""Non-finite weights: a checkpoint holding NaN or Inf is refused on load with one line that names
the file, the first bad tensor and how many are bad, for frozen and fine-tuned protocols alike."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision
from builders import tiny_task_dir, write_class_folders
from safetensors.torch import save_file

from lvmbench.encoders import create_encoder
from lvmbench.encoders.checkpoint import read_state_dict
from lvmbench.errors import CheckpointError
from lvmbench.tasks import TASKS, load_task_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


def _poison(sd: dict[str, torch.Tensor], **bad: float) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in sd.items()}
    for key, value in bad.items():
        key = key.replace("__", ".")
        out[key].view(-1)[:3] = value
    return out


def test_nan_in_one_tensor_names_the_file_and_the_key(tmp_path, r18_state):
    p = tmp_path / "diverged.pth"
    torch.save(_poison(r18_state, layer3__1__bn2__weight=float("nan")), p)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(p)
    msg = str(err.value)
    assert str(p) in msg and "layer3.1.bn2.weight" in msg and "1 of" in msg and "NaN" in msg
    assert "; fix: " in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="layer3.1.bn2.weight"):
        create_encoder("resnet18", p)


def test_inf_and_nan_in_several_tensors_counts_them_safetensors(tmp_path, r18_state):
    sd = _poison(r18_state, conv1__weight=float("inf"), layer4__0__conv2__weight=float("-inf"), fc__bias=float("nan"))
    p = tmp_path / "diverged.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    with pytest.raises(CheckpointError) as err:
        read_state_dict(p)
    msg = str(err.value)
    assert str(p) in msg and "3 of" in msg
    assert any(k in msg for k in ("conv1.weight", "layer4.0.conv2.weight", "fc.bias"))
    # the registered LVM-Med adapter reads through the same check
    with pytest.raises(CheckpointError, match="3 of"):
        create_encoder("lvmmed-r50", p)


def test_finite_checkpoints_and_integer_buffers_still_load(tmp_path, r18_state):
    p = tmp_path / "fine.pth"
    torch.save(r18_state, p)
    assert set(read_state_dict(p)) == set(r18_state)
    enc, ident = create_encoder("resnet18", p)
    assert ident.load_report["matched"] > 0


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("nanweights")
    tiny_task_dir(base / "tasks", "w8nan", "w8nan")
    write_class_folders(base / "data" / "w8nan")
    TASKS.names()
    spec = load_task_file(base / "tasks" / "w8nan" / "task.yaml")
    TASKS.add(spec.id, spec)
    yield base
    TASKS._items.pop(spec.id, None)


@pytest.mark.parametrize("protocol", ["knn", "finetune"])
def test_eval_refuses_non_finite_weights_with_one_line(protocol, tiny_env, tmp_path, r18_state, monkeypatch, capsys):
    """Before: knn (frozen) crashed with a traceback on NaN features, finetune scored the NaN
    encoder and exited 0. Now both stop before any unit runs."""
    from lvmbench import cli as cli_mod

    weights = tmp_path / "nan.pth"
    torch.save(_poison(r18_state, layer2__0__conv1__weight=float("nan")), weights)
    results = tmp_path / "results"
    argv = ["lvmbench", "eval", "--encoder", "resnet18", "--weights", str(weights), "--suite", "lvmmed", "--tasks", "w8nan",
            "--protocol", protocol, "--data-root", str(tiny_env / "data"), "--results", str(results),
            "--cache-dir", str(tiny_env / "cache"), "--no-progress"]
    monkeypatch.setattr(sys, "argv", argv)
    code = 0
    try:
        cli_mod.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "layer2.0.conv1.weight" in ln]
    assert len(lines) == 1 and str(weights) in lines[0] and "; fix: " in lines[0], err
    assert not results.exists() or not list(results.rglob("*.json"))  # no unit scored the weights
