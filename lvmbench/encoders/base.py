"""The Encoder contract every protocol relies on.

An encoder is an ``nn.Module`` with

- ``feature_maps(x) -> list[Tensor]``: a pyramid, one map per entry of ``feature_info`` (strides 2..32
  for CNNs; the U-Net and FPN heads use them),
- ``embed(x) -> Tensor``: one pooled vector per image (linear probe, kNN, retrieval),
- ``input_spec``: what the encoder expects (channels, mean/std, native size).

``x`` is a float tensor (N, C, H, W) already normalised with ``input_spec``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class Encoder(nn.Module):
    """Base class; adapters implement ``feature_maps`` and usually inherit ``embed``."""

    input_spec: InputSpec = InputSpec()
    feature_info: FeatureInfo
    embed_dim: int

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights in the layout the checkpoint loader reads back (no wrapper prefixes)."""
        return self.state_dict()

    def load_backbone_state_dict(self, sd: dict[str, torch.Tensor], strict: bool = True):
        return self.load_state_dict(sd, strict=strict)
