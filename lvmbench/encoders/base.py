"""The Encoder contract every protocol relies on.

An encoder is an ``nn.Module`` with

- ``feature_maps(x) -> list[Tensor]``: a pyramid, one map per entry of ``feature_info`` (strides 2..32
  for CNNs; the U-Net and FPN heads use them),
- ``embed(x) -> Tensor``: one pooled vector per image (linear probe, kNN, retrieval),
- ``forward_pooled(x) -> (maps, pooled)``: both from one forward pass (pretraining objectives),
- ``pooling``: how ``embed`` pools (one of ``POOLINGS``, chosen from ``poolings``); recorded in
  every result and in checkpoints made by ``lvmbench pretrain``, so an encoder is evaluated on
  the pooled vector its objective trained,
- ``input_spec``: what the encoder expects (channels, mean/std, native size).

``x`` is a float tensor (N, C, H, W) already normalised with ``input_spec``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

POOLINGS = {
    "avg": "global average of the backbone's last feature map: a CNN's last stage, a ViT's last-block "
    "patch-token grid (before the final norm and the pyramid; LVM-Med's pretraining and its ViT wrapper)",
    "head": "timm's own pooled pre-logits output (its global_pool after the final norm: the class "
    "token for most ViTs)",
}


def global_avg(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): the one average pooling every adapter and objective uses, so an
    embedding and the pretrainer's pooled vector are the same computation, bit for bit."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


@dataclass(frozen=True)
class InputSpec:
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    size: int = 224
    patch_multiple: int = 32


@dataclass(frozen=True)
class FeatureInfo:
    channels: tuple[int, ...]
    strides: tuple[int, ...]


@dataclass
class EncoderIdentity:
    """What names an encoder in results: its registry name and the sha256 of its weights."""

    name: str
    weights_sha256: str
    weights_path: str | None = None
    load_report: dict = field(default_factory=dict)
    pooling: str = "avg"  # Encoder.pooling at load time: part of what the embedding means


class Encoder(nn.Module):
    """Base class; adapters implement ``feature_maps`` and usually inherit ``embed``."""

    input_spec: InputSpec = InputSpec()
    feature_info: FeatureInfo
    embed_dim: int
    pooling: str = "avg"
    poolings: tuple[str, ...] = ("avg",)  # what ``set_pooling`` accepts

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward_pooled(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(feature maps, pooled embedding) from one forward pass; ``pooled`` equals ``embed(x)``."""
        maps = self.feature_maps(x)
        return maps, global_avg(maps[-1])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pooled(x)[1]

    def set_pooling(self, pooling: str) -> None:
        if pooling not in self.poolings:
            raise ValueError(f"{self.__class__.__name__} has no pooling '{pooling}' (it has {', '.join(self.poolings)})")
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights in the layout the checkpoint loader reads back (no wrapper prefixes)."""
        return self.state_dict()

    def load_backbone_state_dict(self, sd: dict[str, torch.Tensor], strict: bool = True):
        return self.load_state_dict(sd, strict=strict)
