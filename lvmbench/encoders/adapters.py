"""Encoder adapters: torchvision ResNets, any timm model, and ViT pyramids.

The torchvision ResNet adapter keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` ...),
so its ``state_dict`` *is* the torchvision layout minus ``fc``: LVM-Med's ResNet-50 release file,
torchvision checkpoints and the in-repo pretrainer's output all load into it unchanged.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from lvmbench.encoders.base import Encoder, FeatureInfo, InputSpec, global_avg

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


class TimmEncoder(Encoder):
    """Any timm model: ``feature_maps`` are its ``forward_intermediates`` (transformers, one
    stride, get a simple feature pyramid); ``embed`` pools by ``pooling``: ``head`` (default: timm's
    pooled pre-logits output, e.g. a ViT's class token after the final norm, the usual probe of a
    third-party checkpoint) or ``avg`` (the last intermediate map averaged: a ViT's last-block
    patch tokens, what ``lvmbench pretrain`` trains and LVM-Med's ViT wrapper probes)."""

    poolings = ("head", "avg")

    def __init__(self, name: str, img_size: int | None = None, pooling: str = "head", **kwargs):
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
        # embedding width per pooling: timm's head may widen the last stage (EfficientNet's conv_head)
        self._dims = {"head": int(self.model.num_features), "avg": chans[-1]}
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
        self.set_pooling(pooling)

    def set_pooling(self, pooling: str) -> None:
        super().set_pooling(pooling)
        self.embed_dim = self._dims[pooling]

    def _maps(self, inter: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.pyramid(list(inter)) if self._single_stride else list(inter)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._maps(self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True))

    def forward_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self.pooling == "head":
            final, inter = self.model.forward_intermediates(x, indices=self._indices)
            return self._maps(inter), self.model.forward_head(final, pre_logits=True)
        inter = self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True)
        return self._maps(inter), global_avg(inter[-1])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        # Without the pyramid: feature extraction runs once per image of every frozen protocol.
        if self.pooling == "head":
            return self.model(x)
        return global_avg(self.model.forward_intermediates(x, indices=[self._indices[-1]], intermediates_only=True)[-1])

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
