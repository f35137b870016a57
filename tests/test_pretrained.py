"""Released weights from local caches only: `eval --pretrained` and the presets find the file in a
Hugging Face hub cache (or torch hub's checkpoint folder) built here in the cache layout, never
open a connection, load it strictly and record its sha256 as the encoder's identity; a missing
cache is one line with the command that fetches it."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
import torch
from cli_helpers import cli, the_line
from safetensors.torch import save_file

from lvmbench.encoders import create_encoder
from lvmbench.encoders.pretrained import PRESETS, Preset, UrlFile, _builder, released_weights, source_for

pytestmark = pytest.mark.usefixtures("one_thread")
REV = "0123456789abcdef0123456789abcdef01234567"


def hub_file(hf_home: Path, repo: str, blob: bytes, filename: str = "model.safetensors") -> Path:
    """A file of a model repo in huggingface_hub's cache layout: blobs/<sha256>, a snapshot
    symlink to it, refs/main naming the snapshot, and the repo's config.json."""
    root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    sha = hashlib.sha256(blob).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / sha).write_bytes(blob)
    snap = root / "snapshots" / REV
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).symlink_to(Path("..", "..", "blobs", sha))
    cfg = json.dumps({"architecture": repo.split("/")[-1].split(".")[0]}).encode()
    (root / "blobs" / hashlib.sha256(cfg).hexdigest()).write_bytes(cfg)
    (snap / "config.json").symlink_to(Path("..", "..", "blobs", hashlib.sha256(cfg).hexdigest()))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(REV, encoding="utf-8")
    return snap / filename


def safetensors_blob(sd: dict[str, torch.Tensor], tmp: Path) -> bytes:
    p = tmp / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    return p.read_bytes()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty HF_HOME / TORCH_HOME under tmp, HF_HUB_OFFLINE=1, and any socket connection fails."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    connect = socket.socket.connect

    def refuse(self, address, *a):
        if self.family in (socket.AF_INET, socket.AF_INET6):  # local sockets (worker processes) are fine
            raise AssertionError(f"a network connection was attempted: {address}")
        return connect(self, address, *a)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path


@pytest.fixture(scope="module")
def r18_blob(tmp_path_factory) -> bytes:
    """torchvision's resnet18 layout with fc, as timm/resnet18.tv_in1k holds it; the values are the
    seed-0 initialisation random-init uses (which beats the smoke baselines)."""
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.resnet18().state_dict()
    return safetensors_blob(sd, tmp_path_factory.mktemp("r18"))


def test_torchvision_name_resolves_the_tv_weights_from_the_hub_cache(offline, r18_blob):
    snap = hub_file(offline / "hf", "timm/resnet18.tv_in1k", r18_blob)
    path = released_weights("resnet18", None, pretrained=True)
    assert path == snap
    enc, ident = create_encoder("resnet18", pretrained=True)
    assert ident.weights_sha256 == hashlib.sha256(r18_blob).hexdigest(), "identity = sha256 of the file read"
    assert Path(ident.weights_path).parent.name == "blobs"
    from safetensors.torch import load_file

    want = load_file(str(snap))
    assert torch.equal(enc.state_dict()["conv1.weight"], want["conv1.weight"])
    assert torch.equal(enc.state_dict()["layer4.1.bn2.running_var"], want["layer4.1.bn2.running_var"])


def test_eval_pretrained_runs_offline_and_records_the_file_hash(offline, r18_blob, synth_root, monkeypatch, capsys):
    hub_file(offline / "hf", "timm/resnet18.tv_in1k", r18_blob)
    results = offline / "results"
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--pretrained", "--suite", "smoke", "--tasks", "brain_tumor_linear",
                       "--protocol", "knn", "--data-root", str(synth_root), "--results", str(results), "--cache-dir", str(offline / "cache"), "--no-progress")  # fmt: skip
    assert code == 0, err
    sha = hashlib.sha256(r18_blob).hexdigest()
    (res,) = list(results.rglob("knn-s0.json"))
    rec = json.loads(res.read_text(encoding="utf-8"))
    assert res.relative_to(results).parts[:3] == ("smoke", "resnet18", sha[:12])
    assert rec["unit"]["weights_sha256"] == sha and rec["weights_path"].endswith(sha)


def test_missing_cache_is_one_line_with_the_download_command(offline, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet50", "--pretrained", "--suite", "smoke", "--results", str(offline / "r"))
    assert code == 2
    line = the_line(err, "no cached weights for 'resnet50'")
    assert len(err.strip().splitlines()) == 1
    assert "hf_hub_download('timm/resnet50.tv_in1k', 'model.safetensors')" in line and "HF_HOME" in line
    assert str(offline / "hf" / "hub") in line
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "dino-r50", "--suite", "smoke", "--results", str(offline / "r"))
    line = the_line(err, "no cached weights for 'dino-r50'")
    assert code == 2 and "download_url_to_file('https://dl.fbaipublicfiles.com/dino/" in line and str(offline / "torch" / "hub" / "checkpoints") in line
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--pretrained", "--weights", str(offline / "w.pt"), "--suite", "smoke")
    assert code == 2 and "--pretrained and --weights" in the_line(err, "error:")
    assert not (offline / "r").exists(), "nothing written"


def test_timm_name_uses_timms_default_tag(offline):
    import timm
    from safetensors.torch import load_file

    src, _ = source_for("test_resnet")
    assert src.repo == timm.models.get_pretrained_cfg("test_resnet").hf_hub_id == "timm/test_resnet.r160_in1k"
    sd = timm.create_model("test_resnet", pretrained=False).state_dict()
    snap = hub_file(offline / "hf", src.repo, safetensors_blob(sd, offline))
    enc, ident = create_encoder("test_resnet", pretrained=True)
    assert ident.weights_sha256 == hashlib.sha256(snap.read_bytes()).hexdigest()
    key = next(k for k in load_file(str(snap)) if k.endswith("weight") and not k.startswith(("fc.", "head.")))
    assert torch.equal(enc.backbone_state_dict()[key], load_file(str(snap))[key])


def test_url_preset_keeps_only_the_query_encoder(offline):
    """MoCo's file: module.encoder_q.* is the encoder (its MLP head ignored), encoder_k and the queue are not."""
    import torchvision

    torch.manual_seed(5)
    sd = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    ckpt = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    ckpt |= {"module.encoder_q.fc.0.weight": torch.zeros(4, 512), "module.encoder_k.conv1.weight": torch.zeros(1), "module.queue": torch.zeros(2, 3)}
    preset = Preset("moco-test", "resnet18", UrlFile("https://example.invalid/moco_test.pth.tar"), "test", "", keep_prefix="module.encoder_q.")
    path = offline / "torch" / "hub" / "checkpoints" / "moco_test.pth.tar"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": ckpt}, path)
    enc = _builder(preset)(path)
    assert torch.equal(enc.state_dict()["layer1.0.conv1.weight"], sd["layer1.0.conv1.weight"])
    assert enc._load_report["ignored"] == ["fc.0.weight"]
    assert PRESETS["mocov2-r50"].keep_prefix == "module.encoder_q."


def test_encoders_lists_presets_and_what_is_cached(offline, r18_blob, monkeypatch, capsys):
    hub_file(offline / "hf", "timm/resnet50.tv_in1k", r18_blob)  # any file: the listing only checks presence
    code, out, err = cli(monkeypatch, capsys, "encoders")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in ("imagenet-r50-tv", "dino-r50", "mocov2-r50", "barlowtwins-r50"):
        assert name in rows, out
    assert "timm/resnet50.tv_in1k" in rows["imagenet-r50-tv"] and rows["imagenet-r50-tv"].rstrip().endswith("yes")
    assert rows["dino-r50"].rstrip().endswith("no") and "dl.fbaipublicfiles.com/dino/" in rows["dino-r50"]
