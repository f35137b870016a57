"""Checkpoint loading: strict keys, prefixes, shapes, refusal of code-executing pickles."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from lvmbench.encoders import RANDOM_INIT, create_encoder
from lvmbench.encoders.checkpoint import read_state_dict, sha256_file
from lvmbench.errors import CheckpointError


@pytest.fixture(scope="module")
def r18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


def _equal_params(enc, sd):
    own = enc.state_dict()
    return all(torch.equal(own[k], sd[k]) for k in own if k in sd)


def test_right_keys_load_and_identify(tmp_path, r18_state):
    p = tmp_path / "r18.pth"
    torch.save(r18_state, p)  # includes fc.* (allow-listed)
    enc, ident = create_encoder("resnet18", p)
    assert _equal_params(enc, r18_state)
    assert ident.weights_sha256 == sha256_file(p) != RANDOM_INIT
    assert ident.load_report["ignored"] == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("prefix", ["module.", "backbone.", "encoder.", "module.backbone."])
def test_prefixed_keys_and_wrappers(tmp_path, r18_state, prefix):
    p = tmp_path / "pref.pt"
    torch.save({"state_dict": {prefix + k: v for k, v in r18_state.items()}, "epoch": 3}, p)
    enc, ident = create_encoder("resnet18", p)
    assert _equal_params(enc, r18_state)
    assert ident.load_report["stripped_prefix"] == prefix


def test_safetensors(tmp_path, r18_state):
    p = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in r18_state.items()}, str(p))
    enc, _ = create_encoder("resnet18", p)
    assert _equal_params(enc, r18_state)


def test_wrong_keys_fail_loudly(tmp_path, r18_state):
    sd = dict(r18_state)
    sd.pop("layer1.0.conv1.weight")
    sd["extra.layer.weight"] = torch.zeros(3)
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        create_encoder("resnet18", p)
    msg = str(e.value)
    assert str(p) in msg and "1 missing" in msg and "1 unexpected" in msg and "\n" not in msg


def test_wrong_shapes_fail(tmp_path):
    p = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), p)
    with pytest.raises(CheckpointError, match="wrong shape"):
        create_encoder("resnet18", p)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/lvmbench_pwned",))


def test_code_executing_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_state_dict(p)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        read_state_dict(raw)
    import os

    assert not os.path.exists("/tmp/lvmbench_pwned")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("hello, not a checkpoint", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(p)
    with pytest.raises(CheckpointError, match="not found"):
        create_encoder("resnet18", tmp_path / "missing.pth")


def test_lvmmed_r50_release_layout(tmp_path):
    sd = torchvision.models.resnet50().state_dict()  # flat torchvision dict with fc.*
    p = tmp_path / "lvmmed_resnet.torch"
    torch.save(sd, p)
    enc, _ = create_encoder("lvmmed-r50", p)
    ref = torchvision.models.resnet50()
    ref.load_state_dict(sd)
    ref.fc = torch.nn.Identity()
    ref.eval(), enc.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(ref(x), enc.embed(x))
    with pytest.raises(CheckpointError, match="needs its release file"):
        create_encoder("lvmmed-r50")


def test_lvmmed_vitb_sam_layout(tmp_path):
    import timm

    sam = timm.create_model("samvit_base_patch16", pretrained=False, num_classes=0, use_abs_pos=False)
    # SAM's own names: mlp.lin1/lin2, and no pos_embed (LVM-Med release, reference §4)
    sd = {k.replace("mlp.fc1", "mlp.lin1").replace("mlp.fc2", "mlp.lin2"): v for k, v in sam.state_dict().items()}
    p = tmp_path / "lvmmed_vit.pth"
    torch.save(sd, p)
    enc, ident = create_encoder("lvmmed-vitb", p)
    assert ident.load_report["matched"] > 150
    assert torch.equal(enc.model.blocks[0].mlp.fc1.weight, sd["blocks.0.mlp.lin1.weight"])
    out = enc.embed(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 768)
