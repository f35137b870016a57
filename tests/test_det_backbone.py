"""Backbone weights into both detectors (LVM-Med's flat R50 file, its ``backbone.``-prefixed mmdet
form), the paper's freezing, and the pyramid any encoder gives the FPN."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lvmbench.encoders import create_encoder
from lvmbench.protocols.det import BACKENDS, get_backend
from lvmbench.protocols.det.body import EncoderBody, frozen_parameter_names
from lvmbench.protocols.settings import DetectionSettings

TINY = DetectionSettings(anchor_scale=4, rpn_proposals_train=64, rpn_proposals_test=32, rois_per_image=32, box_fc=32, fpn_channels=32)


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    """An LVM-Med-style release file: a flat torchvision ResNet-50 state dict with ``fc.*``."""
    torch.manual_seed(7)
    net = torchvision.models.resnet50(weights=None)
    for m in net.modules():  # make BN statistics distinguishable from a fresh init
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("w") / "lvmmed_resnet.torch"
    sd = net.state_dict()
    torch.save(sd, path)
    return path, sd


def mmdet_or_skip():
    why = BACKENDS.get("mmdet").unavailable()
    if why:
        pytest.skip(f"mmdet backend unavailable ({why}); build it with scripts/build_mmcv.sh")


def test_lvmmed_r50_into_torchvision_detector(r50_file):
    path, sd = r50_file
    enc, ident = create_encoder("lvmmed-r50", path)
    model = get_backend("torchvision").build(enc, 14, TINY)
    det = model.state_dict()
    for k, v in sd.items():
        if k.startswith("fc."):
            continue
        # torchvision's fasterrcnn_resnet50_fpn names: backbone.body.<torchvision resnet key>
        assert torch.equal(det[f"backbone.body.{k}"], v), k
    assert not [k for k in det if k.startswith("backbone.body.fc")]


def test_lvmmed_r50_into_mmdet_detector_with_backbone_prefix(r50_file, tmp_path):
    mmdet_or_skip()
    path, sd = r50_file
    # LVM-Med's object_detection script writes tmp.pth = {'backbone.' + k: v} and uses it as load_from.
    prefixed = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    tmp = tmp_path / "tmp.pth"
    torch.save(prefixed, tmp)
    enc, _ = create_encoder("resnet50", tmp)  # the loader strips the prefix
    model = get_backend("mmdet").build(enc, 14, TINY)
    det = model.state_dict()
    for k, v in prefixed.items():
        assert torch.equal(det[k], v), k  # same key, same tensor: init_weights left the backbone alone
    # and the file loads into the detector key-for-key, as mmdet's load_from would
    fresh = get_backend("mmdet").build(create_encoder("resnet50")[0], 14, TINY)
    res = fresh.load_state_dict(prefixed, strict=False)
    assert not res.unexpected_keys
    assert all(not k.startswith("backbone.") or k.endswith("num_batches_tracked") for k in res.missing_keys)
    assert torch.equal(fresh.state_dict()["backbone.layer4.2.bn3.running_var"], sd["layer4.2.bn3.running_var"])


def test_freezing_matches_mmdet_frozen_stages_1():
    enc, _ = create_encoder("resnet18")
    model = get_backend("torchvision").build(enc, 3, TINY)
    body = model.backbone.body
    frozen = body.freeze(1, norm_eval=True)
    assert {n.split(".")[0] for n in frozen} == {"conv1", "bn1", "layer1"}
    assert all(not p.requires_grad for n, p in body.named_parameters() if n.split(".")[0] in ("conv1", "bn1", "layer1"))
    assert all(p.requires_grad for n, p in body.named_parameters() if n.startswith(("layer2", "layer3", "layer4")))
    model.train()
    bns = [m for m in body.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # norm_eval: statistics frozen
    assert model.rpn.training and model.backbone.fpn.training
    before = body.layer2[0].bn1.running_mean.clone()
    images = [torch.randn(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    loss = sum(get_backend("torchvision").losses(model, images, targets).values())
    loss.backward()
    assert body.conv1.weight.grad is None and body.layer2[0].conv1.weight.grad is not None
    assert torch.equal(body.layer2[0].bn1.running_mean, before)
    body.freeze(1, norm_eval=False)
    model.train()
    assert body.layer2[0].bn1.training and not body.bn1.training  # frozen stages stay in eval


def test_timm_freezing_rule():
    timm = pytest.importorskip("timm")
    assert timm
    enc, _ = create_encoder("timm/resnet18")
    names = frozen_parameter_names(enc)
    assert {n.split(".")[1] for n in names} == {"conv1", "bn1", "layer1"}
    vit, _ = create_encoder("timm/vit_tiny_patch16_224")
    vnames = frozen_parameter_names(vit)
    assert vnames and all(not n.startswith("model.blocks") for n in vnames)
    assert any(n.startswith("model.patch_embed") for n in vnames)


def test_a_vit_plugs_in_through_its_simple_pyramid():
    enc, _ = create_encoder("timm/vit_tiny_patch16_224")
    body = EncoderBody(enc)
    assert body.strides == [4, 8, 16, 32]
    model = get_backend("torchvision").build(enc, 2, TINY)
    model.eval()
    with torch.no_grad():
        out = get_backend("torchvision").predict(model, [torch.randn(3, 224, 224)])
    assert out[0]["boxes"].shape[1] == 4


def test_encoder_without_the_fpn_strides_is_refused():
    from lvmbench.encoders.base import Encoder, FeatureInfo
    from lvmbench.errors import UserError

    class Flat(Encoder):
        feature_info = FeatureInfo(channels=(8,), strides=(16,))

    with pytest.raises(UserError, match="strides"):
        EncoderBody(Flat())
