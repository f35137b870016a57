"""Encoder adapters: torchvision ResNets, any timm model, and ViT pyramids.

The torchvision ResNet adapter keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` ...),
so its ``state_dict`` *is* the torchvision layout minus ``fc``: LVM-Med's ResNet-50 release file,
torchvision checkpoints and the in-repo pretrainer's output all load into it unchanged.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from lvmbench.encoders.base import Encoder, FeatureInfo, InputSpec

TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


class TorchvisionResNet(Encoder):
    """torchvision ResNet without ``avgpool``/``fc``; pyramid = stem (stride 2) + layer1..layer4."""

    def __init__(self, arch: str = "resnet50"):
        super().__init__()
        if arch not in TORCHVISION_RESNETS:
            raise ValueError(f"not a torchvision ResNet: {arch}")
        net = getattr(torchvision.models, arch)(weights=None)
        self.arch = arch
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        chans = [64] + [self._out_channels(getattr(self, f"layer{i}")) for i in range(1, 5)]
        self.feature_info = FeatureInfo(channels=tuple(chans), strides=(2, 4, 8, 16, 32))
        self.embed_dim = chans[-1]
        self.input_spec = InputSpec()

    @staticmethod
    def _out_channels(layer: nn.Sequential) -> int:
        last = layer[-1]
        bn = getattr(last, "bn3", None) or last.bn2
        return bn.num_features

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(s2))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [s2, c2, c3, c4, c5]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_maps(x)[-1], 1), 1)


class TimmEncoder(Encoder):
    """Any timm model: ``embed`` is timm's pooled pre-logits output, ``feature_maps`` its
    ``forward_intermediates``. Transformers (one stride) get a simple feature pyramid."""

    def __init__(self, name: str, img_size: int | None = None, **kwargs):
        super().__init__()
        import timm

        kw = dict(kwargs)
        if img_size is not None:
            kw["img_size"] = img_size
        self.model = timm.create_model(name, pretrained=False, num_classes=0, **kw)
        info = getattr(self.model, "feature_info", None)
        if not info:
            raise ValueError(f"timm model '{name}' exposes no feature_info; it cannot give a feature pyramid")
        chans = tuple(int(f["num_chs"]) for f in info)
        strides = tuple(int(f["reduction"]) for f in info)
        self.name = name
        self.embed_dim = int(self.model.num_features)
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        size = img_size or int((cfg.get("input_size") or (3, 224, 224))[-1])
        self.input_spec = InputSpec(
            channels=3,
            mean=tuple(cfg.get("mean", InputSpec.mean)),
            std=tuple(cfg.get("std", InputSpec.std)),
            size=size,
            patch_multiple=max(strides),
        )
        self._single_stride = len(set(strides)) == 1
        if self._single_stride:
            # A ViT: take four evenly spaced blocks and resample them to strides 4/8/16/32
            # (ViTDet-style simple pyramid), so dense heads see the same shape of pyramid as a CNN.
            n = len(info)
            self._indices = sorted({max(0, round(n * q) - 1) for q in (0.25, 0.5, 0.75, 1.0)})
            c, s = chans[-1], strides[-1]
            self.pyramid = SimplePyramid(c, s)
            self.feature_info = FeatureInfo(channels=self.pyramid.channels, strides=self.pyramid.strides)
        else:
            self._indices = list(range(len(info)))
            self.feature_info = FeatureInfo(channels=chans, strides=strides)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True)
        if self._single_stride:
            return self.pyramid(list(maps))
        return list(maps)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_backbone_state_dict(self, sd, strict: bool = True):
        return self.model.load_state_dict(sd, strict=strict)


class SimplePyramid(nn.Module):
    """Four single-stride token maps -> strides (s/4, s/2, s, 2s) by deconv/identity/pool (ViTDet)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        c = channels
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 2, 2), nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, 2)
        )
        self.up2 = nn.ConvTranspose2d(c, c // 2, 2, 2)
        self.down2 = nn.MaxPool2d(2)
        self.channels = (c // 4, c // 2, c, c)
        self.strides = (stride // 4, stride // 2, stride, stride * 2)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        while len(maps) < 4:
            maps = [maps[0], *maps]
        a, b, c, d = maps[-4:]
        return [self.up4(a), self.up2(b), c, self.down2(d)]
