"""Encoder adapters: torchvision ResNets, any timm model, and ViT pyramids.

The torchvision ResNet adapter keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` ...),
so its ``state_dict`` *is* the torchvision layout minus ``fc``: LVM-Med's ResNet-50 release file,
torchvision checkpoints and the in-repo pretrainer's output all load into it unchanged.
"""

from __future__ import annotations

import timm
import torch
import torchvision
from timm.layers import LayerNorm2d
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
        kw = dict(kwargs)
        if img_size is not None:
            kw["img_size"] = img_size
        self.model, self.dynamic_size = _create_any_size(name, kw)
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
            # A plain ViT: ViTDet's simple feature pyramid from the last block only, resampled to
            # strides 4/8/16/32, so dense heads see the same shape of pyramid as a CNN (README:
            # "ViT encoders and prompt-based segmentation" says why the last block).
            self._indices = [len(info) - 1]
            self.pyramid_kind = "vitdet-last-block"  # in the result identity (runner.encoder_info)
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

    def _fit(self, x: torch.Tensor) -> None:
        """Models without a dynamic image size (e.g. BEiT) are re-sized to the input once (timm
        ``set_input_size`` resamples the position embeddings), as a task's image size requires."""
        if self.dynamic_size:
            return
        hw = tuple(int(v) for v in x.shape[-2:])
        pe = getattr(self.model, "patch_embed", None)
        current = tuple(getattr(pe, "img_size", None) or ()) if pe is not None and getattr(pe, "strict_img_size", False) else None
        if current and current != hw and hasattr(self.model, "set_input_size"):
            self.model.set_input_size(img_size=hw)

    def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The single map a prompt decoder reads: the last block's token grid (N, C, H/16, W/16) for a
        plain ViT; SAM-style models (``has_sam_neck``) give their neck's 256-channel output."""
        self._fit(x)
        if getattr(self, "has_sam_neck", False):
            return self.model.forward_features(x)
        return self.model.forward_intermediates(x, indices=[self._indices[-1]], intermediates_only=True)[-1]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._fit(x)
        return self._maps(self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True))

    def forward_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        self._fit(x)
        if self.pooling == "head":
            final, inter = self.model.forward_intermediates(x, indices=self._indices)
            return self._maps(inter), self.model.forward_head(final, pre_logits=True)
        inter = self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True)
        return self._maps(inter), global_avg(inter[-1])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        # Without the pyramid: feature extraction runs once per image of every frozen protocol.
        self._fit(x)
        if self.pooling == "head":
            return self.model(x)
        return global_avg(self.model.forward_intermediates(x, indices=[self._indices[-1]], intermediates_only=True)[-1])

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_backbone_state_dict(self, sd, strict: bool = True):
        return self.model.load_state_dict(sd, strict=strict)


def _create_any_size(name: str, kw: dict) -> tuple[nn.Module, bool]:
    """A timm model that runs at the task's image size: transformers that support it are built
    with ``dynamic_img_size`` (position embeddings interpolated per input) and, where the model has
    it, ``dynamic_img_pad``: a side that is not a multiple of the patch (any size for a patch-14
    EVA-02 / DINOv2, 520 px for a patch-16 ViT) is zero-padded to the next multiple instead of
    failing; sizes that are multiples are untouched. CNNs and models without these options are built
    as they are (``TimmEncoder._fit`` re-sizes the latter). Returns (model, dynamic)."""
    if "img_size" not in kw:
        for extra in ({"dynamic_img_size": True, "dynamic_img_pad": True}, {"dynamic_img_size": True}):
            try:
                return timm.create_model(name, pretrained=False, num_classes=0, **extra, **kw), True
            except TypeError as e:
                if not any(k in str(e) for k in extra):
                    raise
    model = timm.create_model(name, pretrained=False, num_classes=0, **kw)
    # SAM's ViT pads to its windows and resamples its own position tables at any size
    return model, type(model).__name__ == "VisionTransformerSAM"


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid: the last block's map (stride s) -> strides (s/4, s/2, s, 2s)
    by deconv-LN-GELU-deconv / deconv / identity / max-pool (Li et al. 2022, "Exploring Plain
    Vision Transformer Backbones for Object Detection")."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        c = channels
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 2, 2), LayerNorm2d(c // 2), nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, 2)
        )
        self.up2 = nn.ConvTranspose2d(c, c // 2, 2, 2)
        self.down2 = nn.MaxPool2d(2, ceil_mode=True)  # ceil: a 1x1 token map (tiny inputs) stays 1x1
        self.channels = (c // 4, c // 2, c, c)
        self.strides = (stride // 4, stride // 2, stride, stride * 2)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        last = maps[-1]
        return [self.up4(last), self.up2(last), last, self.down2(last)]
