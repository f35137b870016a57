"""ViT encoders: transformers at any task size, ViTDet's pyramid, SAM-layout loading (a whole
``sam_vit_b_01ec64.pth``-style state dict built at tiny size loads strictly and computes what
``segment_anything`` computes), and tiny ViT/Swin models through one unit of each family."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from cli_helpers import cli, the_line
from torch import nn

from lvmbench.encoders import ENCODERS, create_encoder
from lvmbench.encoders.adapters import TimmEncoder
from lvmbench.encoders.checkpoint import read_state_dict
from lvmbench.encoders.sam import SamViT, load_sam_encoder
from lvmbench.errors import CheckpointError
from lvmbench.heads.sam import PromptSegModel, SamDecoder, load_sam_decoder
from lvmbench.spec import RunOptions

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,), "window_size": 2, "neck_chans": 32}


def tiny_sam(seed: int = 0):
    """segment_anything's own Sam at tiny size (64 px input, 4 x 4 embedding), every weight random."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4, out_chans=32, qkv_bias=True,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6), use_abs_pos=True, use_rel_pos=True, window_size=2, global_attn_indexes=(1,)),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
                                 transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32),
    )
    with torch.no_grad():
        for p in sam.parameters():  # SAM zero-initialises pos/rel-pos tables: make every tensor count
            p.add_(0.05 * torch.randn_like(p))
    return sam.eval()


def tiny_decoder() -> SamDecoder:
    return SamDecoder(image_size=64, embed_dim=32, depth=2, mlp_dim=64, num_heads=2, iou_hidden=32).eval()


@pytest.mark.parametrize("name", ["test_vit", "swin_tiny_patch4_window7_224", "beit_base_patch16_224"])
def test_transformers_run_at_any_task_size(name):
    enc = TimmEncoder(name).eval()
    for size in (32, 64, 96):
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            maps = enc.feature_maps(x)
            assert [m.shape[-1] for m in maps] == [size // s for s in enc.feature_info.strides], (name, size)
            assert enc.embed(x).shape == (1, enc.embed_dim)


def test_patch14_transformers_run_at_sizes_that_are_not_multiples_of_14():
    """EVA-02 (patch 14) at the smoke profiles' 32 px and an odd size: the input is padded to the
    next multiple of the patch (``dynamic_img_pad``), dense outputs keep the input's size."""
    from lvmbench.encoders.sizes import track_input_sizes
    from lvmbench.heads.unet import UNet

    seen: set[tuple[int, int]] = set()
    enc = track_input_sizes(TimmEncoder("eva02_tiny_patch14_224", embed_dim=32, depth=1, num_heads=2).eval(), seen)
    unet = UNet(enc, 2).eval()
    for hw in ((32, 32), (100, 130)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            assert unet(x).shape[-2:] == hw and enc.embed(x).shape == (1, 32)
    assert seen == {(32, 32), (100, 130)}, "the size given, not the padded one"


def test_vit_pyramid_is_vitdet_from_the_last_block():
    enc = TimmEncoder("test_vit").eval()
    assert enc.feature_info.strides == (4, 8, 16, 32)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        last = enc.model.forward_intermediates(x, intermediates_only=True)[-1]
        maps = enc.feature_maps(x)
    torch.testing.assert_close(maps[2], last)
    torch.testing.assert_close(maps[3], nn.functional.max_pool2d(last, 2))


def test_sam_layout_loads_strictly_and_computes_what_segment_anything_does(tmp_path):
    sam = tiny_sam()
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    sd = read_state_dict(path)
    assert {k.split(".")[0] for k in sd} == {"image_encoder", "prompt_encoder", "mask_decoder"}

    enc = SamViT(img_size=64, **TINY).eval()
    report = load_sam_encoder(enc, sd, path)
    assert report["matched"] == len([k for k in sd if k.startswith("image_encoder.")])
    dec = tiny_decoder()
    rep = load_sam_decoder(dec, path)
    assert rep["matched"] == len(sd) - report["matched"] and rep["skipped_image_encoder_keys"] == report["matched"]

    x = torch.randn(2, 3, 64, 64)
    boxes = torch.tensor([[4.0, 8.0, 40.0, 50.0], [10.0, 2.0, 30.0, 60.0]])
    with torch.no_grad():
        emb = enc.image_embedding(x)
        torch.testing.assert_close(emb, sam.image_encoder(x), atol=1e-4, rtol=1e-4)
        ours = dec(emb, boxes)
        pe = sam.prompt_encoder.get_dense_pe()
        for i in range(2):  # SAM's own decoder, one image at a time
            sparse, dense = sam.prompt_encoder(points=None, boxes=boxes[i : i + 1], masks=None)
            ref, _ = sam.mask_decoder(image_embeddings=emb[i : i + 1], image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            torch.testing.assert_close(ours[i : i + 1], ref, atol=1e-5, rtol=1e-5)
        assert ours.shape == (2, 1, 16, 16)  # 4 x the 4 x 4 embedding, as 256 for SAM's 64 x 64
    model = PromptSegModel(enc, dec)
    assert model.own_neck and model.kind == "sam" and not any(p.requires_grad for p in enc.parameters())


def test_wrong_keys_fail_with_the_loaders_line(tmp_path):
    sd = tiny_sam().state_dict()
    bad_enc = dict(sd)
    bad_enc["image_encoder.blocks.0.attn.qkvv.weight"] = bad_enc.pop("image_encoder.blocks.0.attn.qkv.weight")
    p = tmp_path / "bad_enc.pth"
    torch.save(bad_enc, p)
    with pytest.raises(CheckpointError, match=r"keys do not match VisionTransformerSAM: 1 missing \(e.g. blocks.0.attn.qkv.weight\); 1 unexpected"):
        load_sam_encoder(SamViT(img_size=64, **TINY), read_state_dict(p), p)
    bad_dec = dict(sd)
    bad_dec["mask_decoder.iou_tokn.weight"] = bad_dec.pop("mask_decoder.iou_token.weight")
    q = tmp_path / "bad_dec.pth"
    torch.save(bad_dec, q)
    with pytest.raises(CheckpointError, match=r"keys do not match SamDecoder: 1 missing \(e.g. mask_decoder.iou_token.weight\)"):
        load_sam_decoder(tiny_decoder(), q)


def test_decoder_weights_of_another_size_fail_in_one_line(monkeypatch, capsys, tmp_path, synth_root, cache_dir):
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam().state_dict(), path)
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "kvasir_seg", "--protocol", "seg2d-prompt",
                       "--decoder-weights", str(path), "--data-root", str(synth_root), "--results", str(tmp_path / "r"), "--no-progress")
    assert code == 1
    assert "wrong shape for SamDecoder" in the_line(err, "wrong shape")
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "kvasir_seg", "--protocol", "seg2d-prompt",
                       "--decoder-weights", str(tmp_path / "nope.pth"), "--data-root", str(synth_root), "--results", str(tmp_path / "r"), "--no-progress")
    assert code != 0 and "decoder weights file not found" in the_line(err, "not found")


def tiny_swin(weights=None) -> TimmEncoder:
    return TimmEncoder("swin_tiny_patch4_window7_224", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))


@pytest.mark.parametrize("name", ["test_vit", "tiny-swin"])
def test_tiny_vit_and_swin_run_one_unit_of_each_family(name, monkeypatch, tmp_path, synth_root, cache_dir):
    """Classification (linear probe) and segmentation (ViT U-Net) smoke units at the smoke
    profiles' 32 px, and a one-epoch Faster R-CNN unit over the ViTDet pyramid at 64 px; the size
    each ran at is in its result."""
    import numpy as np
    from det_helpers import make_ctx

    from lvmbench.data.synth.detection import write_voc
    from lvmbench.protocols.detection import Detection
    from lvmbench.runner import EvalRequest, run

    monkeypatch.setitem(ENCODERS._items, "tiny-swin", tiny_swin)
    req = EvalRequest(encoder=name, suite="smoke", tasks=["brain_tumor_linear", "kvasir_seg"], protocols=["linear", "seg2d-vit"], heads=["linear"],
                      data_root=synth_root, results=tmp_path / "r", cache_dir=cache_dir, run=RunOptions(progress=False, workers=0))
    summary = run(req, log=lambda s: None)
    assert len(summary.done) == 2 and not summary.failed, summary.failed
    sizes = {p.parent.name: json.loads(p.read_text(encoding="utf-8"))["hyperparameters"].get("encoder_input_size") for p in (tmp_path / "r").rglob("*.json")}
    assert sizes == {"kvasir_seg": [[32, 32]], "brain_tumor_linear": [[32, 32]]}

    root = tmp_path / "det" / "BCCD"
    write_voc(root, np.random.default_rng(0), n=8, h=48, w=64)
    ctx = make_ctx(root, cache_dir, {"epochs": 1})
    enc = tiny_swin() if name == "tiny-swin" else TimmEncoder(name)
    ctx.make_encoder = lambda: enc
    out = Detection().run(ctx)
    assert "ap50" in out.metrics and out.hparams["image_size"] == 64


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224"])
def test_vit_and_swin_run_every_smoke_family(name, tmp_path, synth_root, cache_dir):
    from lvmbench.runner import EvalRequest, run

    req = EvalRequest(encoder=name, suite="smoke", tasks=["brain_tumor_finetune", "kvasir_seg", "mmwhs_ct", "kvasir_det"],
                      data_root=synth_root, results=tmp_path / "r", cache_dir=cache_dir, run=RunOptions(progress=False, workers=0))
    summary = run(req, log=lambda s: None)
    assert summary.done and not summary.failed, summary.failed
    assert not summary.below_baseline, summary.below_baseline  # every family learns, not just runs
    recipes = {p.parent.name: json.loads(p.read_text(encoding="utf-8"))["hyperparameters"].get("recipe") for p in (tmp_path / "r").rglob("*.json")}
    assert recipes == {"brain_tumor_finetune": "transformer", "kvasir_det": "transformer", "kvasir_seg": None, "mmwhs_ct": None}


def test_lvmmed_vit_feeds_sam_decoder_through_its_own_neck(tmp_path):
    enc, _ = create_encoder("resnet18")
    model = PromptSegModel(enc, tiny_decoder())
    assert model.kind == "level3" and not model.own_neck  # stride 16 of a ResNet: layer3
    feats = model.encode(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, 256, 4, 4)
    assert model(feats, torch.tensor([[1.0, 1.0, 30.0, 30.0]] * 2)).shape == (2, 1, 16, 16)
    vit = TimmEncoder("test_vit")
    m2 = PromptSegModel(vit, tiny_decoder())
    assert m2.kind == "tokens" and m2.encode(torch.randn(1, 3, 64, 64)).shape[-2:] == (4, 4)
