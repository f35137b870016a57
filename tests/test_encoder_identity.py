"""Pooling is a recorded part of an encoder: an encoder pretrained in-repo is evaluated on the pooled
vector its objective trained (read back from the checkpoint's metadata), and a user can choose it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from lvmbench.encoders import create_encoder
from lvmbench.encoders.adapters import TimmEncoder, TorchvisionResNet
from lvmbench.errors import UserError
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch
from lvmbench.pretrain.trainer import PretrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = "test_vit"  # timm's 6-block, 64-d test ViT: native 160 px, class-token head
VIT_SIZE = 160


def _images(root: Path, count: int = 16) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        a = np.zeros((40, 40, 3), np.uint8) + rng.integers(0, 120, 3).astype(np.uint8)
        y, x = rng.integers(0, 24, 2)
        a[y : y + 14, x : x + 14] = rng.integers(0, 255, 3)
        Image.fromarray(a).save(root / f"im{i:02d}.png")
    return root


def mean_of_last_block_tokens(vit, x: torch.Tensor) -> torch.Tensor:
    """Independent reference for 'avg' on a ViT: run timm's blocks by hand and average the last
    block's patch tokens (no final norm, no class token): the paper's average-pooled feature map."""
    t = vit.patch_embed(x)
    t = vit._pos_embed(t)
    t = vit.norm_pre(vit.patch_drop(t))
    for blk in vit.blocks:
        t = blk(t)
    return t[:, vit.num_prefix_tokens :].mean(dim=1)


def _pooled_inputs(objective, batch: PretrainBatch) -> torch.Tensor:
    """What the objective feeds its projector (the pooled vector it trains), via a hook."""
    seen: list[torch.Tensor] = []
    proj = objective.projector if hasattr(objective, "projector") else objective.global_projector
    h = proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            objective(batch)
    finally:
        h.remove()
    return seen[0]


OPTIONS = {
    "graph-matching": {"graph_size": 8},
    "mlvicx": {"proj_hidden": 32, "proj_out": 32, "local_channels": 8, "local_size": 8, "local_pool": 2, "local_hidden": 32, "local_out": 32},
}


@pytest.mark.parametrize("objective", ["graph-matching", "mlvicx"])
def test_pretrained_vit_is_evaluated_on_the_pooling_its_objective_trained(objective, tmp_path):
    images = _images(tmp_path / "images")
    out = tmp_path / "run"
    cfg = PretrainConfig(data=[str(images)], objective=objective, encoder=VIT, image_size=VIT_SIZE, batch_size=8, steps=2,
                         out=str(out), workers=0, progress=False, objective_options=OPTIONS[objective])
    path = train(cfg)
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["pooling"] == "avg"
    meta = json.loads((out / "pretrain.json").read_text(encoding="utf-8"))
    assert meta["encoder"]["pooling"] == "avg"

    # the pretrainer's pooled output on fixed inputs: rebuild its objective from checkpoint.pt
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    enc_train, _ = create_encoder(VIT, pooling="avg")
    obj = OBJECTIVES.get(objective)(enc_train, **OPTIONS[objective])
    obj.load_state_dict(state["objective"])
    obj.eval()
    torch.manual_seed(1)
    x = torch.randn(8, 3, VIT_SIZE, VIT_SIZE)
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(8, 1)
    trained = _pooled_inputs(obj, PretrainBatch(x, x.flip(-1), box, box[:, [2, 1, 0, 3]]))[:8]

    # `lvmbench eval --encoder test_vit --weights run/encoder.safetensors` builds this encoder
    enc, ident = create_encoder(VIT, path)
    enc.eval()
    assert enc.pooling == ident.pooling == "avg"
    with torch.no_grad():
        emb = enc.embed(x)
        torch.testing.assert_close(emb, trained, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(emb, mean_of_last_block_tokens(enc.model, x), rtol=1e-5, atol=1e-5)
        # and it is not timm's class token after the final norm (what `embed` returned before)
        assert not torch.allclose(emb, enc.model(x), atol=1e-3)


@pytest.mark.parametrize("name", [VIT, "test_convnext", "test_efficientnet", "resnet18", "test_resnet"])
def test_forward_pooled_matches_embed_and_feature_maps_for_every_pooling(name):
    torch.manual_seed(0)
    base, ident = create_encoder(name)
    size = base.input_spec.size if name == VIT else 64
    x = torch.randn(2, 3, size, size)
    for pooling in base.poolings:
        enc, ident = create_encoder(name, pooling=pooling)
        enc.eval()
        assert enc.pooling == ident.pooling == pooling
        with torch.no_grad():
            maps, pooled = enc.forward_pooled(x)
            emb = enc.embed(x)
            ref_maps = enc.feature_maps(x)
        assert pooled.shape == emb.shape == (2, enc.embed_dim)
        torch.testing.assert_close(pooled, emb, rtol=1e-5, atol=1e-5)
        assert len(maps) == len(ref_maps) and all(torch.equal(a, b) for a, b in zip(maps, ref_maps))
        if pooling == "head":  # timm's own pooled pre-logits
            torch.testing.assert_close(emb, enc.model(x), rtol=0, atol=0)
        elif isinstance(enc, TimmEncoder) and enc.model.__class__.__name__ == "VisionTransformer":
            torch.testing.assert_close(emb, mean_of_last_block_tokens(enc.model, x), rtol=1e-5, atol=1e-5)
        else:  # a CNN: global average of its last stage
            last = enc.model.forward_intermediates(x, intermediates_only=True)[-1] if isinstance(enc, TimmEncoder) else maps[-1]
            torch.testing.assert_close(emb, last.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_defaults_and_user_override(tmp_path):
    # defaults: timm's head for timm models (third-party checkpoints keep their usual probe),
    # the average-pooled last stage for torchvision ResNets, the token grid for LVM-Med's ViT
    assert create_encoder(VIT)[1].pooling == "head"
    assert create_encoder("resnet18")[1].pooling == "avg"
    assert TorchvisionResNet.poolings == ("avg",)
    enc, ident = create_encoder(VIT, pooling="avg")
    assert ident.pooling == "avg" and enc.embed_dim == 64
    # an explicit choice wins over the checkpoint's metadata
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in enc.backbone_state_dict().items()}, str(p), metadata={"lvmbench": "pretrain", "pooling": "avg"})
    assert create_encoder(VIT, p)[1].pooling == "avg"
    assert create_encoder(VIT, p, pooling="head")[1].pooling == "head"
    # foreign safetensors metadata is not read as a pooling
    q = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in enc.backbone_state_dict().items()}, str(q), metadata={"pooling": "avg"})
    assert create_encoder(VIT, q)[1].pooling == "head"
    with pytest.raises(UserError, match="did you mean 'head'"):
        create_encoder(VIT, pooling="haed")
    with pytest.raises(UserError, match="pooling 'head'"):
        create_encoder("resnet18", pooling="head")


def test_lvmmed_vit_pools_its_token_grid():
    from lvmbench.encoders.lvmmed import LvmMedViT

    enc = LvmMedViT(img_size=64).eval()
    assert enc.pooling == "avg" and enc.embed_dim == 768
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        grid = enc.model.forward_intermediates(x, indices=[11], intermediates_only=True)[-1]
        torch.testing.assert_close(enc.embed(x), grid.mean(dim=(2, 3)))
