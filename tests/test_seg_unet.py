"""The U-Net head: LVM-Med's R50 U-Net is smp.Unet("resnet50") key for key and output for output; grey
inputs sum the first kernel's RGB weights; pyramids without a stride-2 level still decode to full size."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision

from lvmbench.encoders import create_encoder
from lvmbench.encoders.adapters import TimmEncoder, TorchvisionResNet
from lvmbench.heads.unet import UNet, adapt_first_conv

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    """A stand-in for lvmmed_resnet.torch: a flat torchvision ResNet-50 state dict (fc included),
    with BatchNorm statistics moved off their defaults so eval-mode outputs depend on them."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "lvmmed_resnet.torch"
    torch.save(net.state_dict(), path)
    return path


def test_lvmmed_r50_unet_equals_smp_unet(r50_file):
    sd = torch.load(r50_file, weights_only=True)
    enc, _ = create_encoder("lvmmed-r50", r50_file)
    ours = UNet(enc, num_classes=3).eval()
    ref = smp.Unet("resnet50", encoder_weights=None, classes=3).eval()
    ref.encoder.load_state_dict(dict(sd))  # smp's own path for an encoder weights file (drops fc)
    # same parameter names and shapes everywhere, so the decoder/head copy is a strict load
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.decoder.load_state_dict(ours.decoder.state_dict(), strict=True)
    ref.segmentation_head.load_state_dict(ours.segmentation_head.state_dict(), strict=True)
    ref_enc = ref.encoder.state_dict()
    for k, v in ours.encoder.state_dict().items():
        torch.testing.assert_close(v, ref_enc[k])
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_grey_input_sums_rgb_kernels_like_smp(r50_file):
    sd = torch.load(r50_file, weights_only=True)
    enc, _ = create_encoder("lvmmed-r50", r50_file)
    ours = UNet(enc, num_classes=8, in_channels=1).eval()
    torch.testing.assert_close(ours.encoder.conv1.weight, sd["conv1.weight"].sum(1, keepdim=True))
    ref = smp.Unet("resnet50", encoder_weights=None, in_channels=1, classes=8).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    grey = torch.rand(1, 1, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(ours(grey), ref(grey))


def test_summed_kernel_equals_repeated_grey_channel():
    torch.manual_seed(1)
    rgb = TorchvisionResNet("resnet18").eval()
    grey = adapt_first_conv(TorchvisionResNet("resnet18").eval(), 1)
    grey.load_state_dict({**rgb.state_dict(), "conv1.weight": rgb.conv1.weight.sum(1, keepdim=True)})
    x = torch.rand(2, 1, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(grey.embed(x), rgb.embed(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["convnext_atto", "vit_tiny_patch16_224"])
def test_pyramid_without_stride_two_decodes_to_full_size(name):
    enc = TimmEncoder(name, img_size=64) if name.startswith("vit") else TimmEncoder(name)
    assert min(enc.feature_info.strides) == 4
    model = UNet(enc, num_classes=2).eval()
    assert model.n_placeholders == 1
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 2, 64, 64)


def test_bad_pyramid_is_refused():
    enc = TorchvisionResNet("resnet18")
    enc.feature_info = type(enc.feature_info)(channels=(64, 64), strides=(8, 4))
    with pytest.raises(ValueError, match="strides"):
        UNet(enc, num_classes=2)
