"""U-Net decoder on any encoder that follows the Encoder contract (``feature_maps`` + ``feature_info``).

The decoder and head are segmentation-models-pytorch's ``UnetDecoder`` and ``SegmentationHead`` and
the attribute names are smp's (``encoder``, ``decoder``, ``segmentation_head``). With the torchvision
ResNet adapter (which keeps torchvision key names, as smp's ResNet encoders do) the model is the same
network as ``smp.Unet("resnet50")``, key for key; ``tests/test_seg_unet.py`` checks that outputs match.

Pyramids without a stride-2 level (timm ConvNeXt, ViTs through the simple-pyramid adapter) get a
zero-channel placeholder at that level: the decoder block still upsamples there, with no skip
connection, so every encoder ends at full input resolution through the same decoder code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.base.heads import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from lvmbench.encoders.base import Encoder

SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def adapt_first_conv(encoder: nn.Module, in_channels: int) -> nn.Module:
    """Make the first 3-channel convolution accept ``in_channels`` inputs, as LVM-Med does for grey
    volumes (smp's ``patch_first_conv``): for one channel the RGB kernels are summed.

    Why summing and not repeating the grey channel three times: both give the same output for the
    same weights (the convolution is linear in its input channels; tested), but under Adam a
    repeated input trains three weight slices whose sum moves up to three times faster than the
    single summed kernel. Summing is what the paper's networks did.
    """
    spec = getattr(encoder, "input_spec", None)
    if in_channels == 3 or getattr(spec, "channels", 3) == in_channels:
        return encoder  # an encoder built for the task's channel count (a plugin told in_channels)
    conv = next((m for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
    if conv is None:
        raise ValueError(f"{encoder.__class__.__name__} has no 3-channel convolution to adapt to {in_channels} channel(s)")
    if in_channels != 1:
        raise ValueError(f"only 1- or 3-channel inputs are supported, not {in_channels}")
    conv.in_channels = 1
    conv.weight = nn.Parameter(conv.weight.detach().sum(dim=1, keepdim=True).contiguous())
    return encoder


class UNet(nn.Module):
    """``encoder`` + smp ``UnetDecoder`` + smp ``SegmentationHead`` -> logits (N, classes, H, W)."""

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        in_channels: int = 3,
        decoder_channels: Sequence[int] | None = None,
    ):
        super().__init__()
        adapt_first_conv(encoder, in_channels)
        self.encoder = encoder
        strides = [float(s) for s in encoder.feature_info.strides]
        chans = [int(c) for c in encoder.feature_info.channels]
        if sorted(strides) != strides or len(set(strides)) != len(strides):
            raise ValueError(f"feature pyramid strides must increase strictly, got {strides}")
        # Placeholder levels below the finest map, halving the stride down to 2 (ResNets: none).
        self.n_placeholders = 0
        s = strides[0]
        while s >= 4:
            s /= 2
            self.n_placeholders += 1
        n_blocks = len(strides) + self.n_placeholders
        if decoder_channels is None:
            decoder_channels = SMP_DECODER_CHANNELS[-n_blocks:] if n_blocks <= 5 else (256,) * (n_blocks - 5) + SMP_DECODER_CHANNELS
        if len(decoder_channels) != n_blocks:
            raise ValueError(f"need {n_blocks} decoder channel entries, got {len(decoder_channels)}")
        encoder_channels = [in_channels] + [0] * self.n_placeholders + chans
        self.decoder = UnetDecoder(encoder_channels=encoder_channels, decoder_channels=list(decoder_channels), n_blocks=n_blocks)
        self.segmentation_head = SegmentationHead(in_channels=decoder_channels[-1], out_channels=num_classes, kernel_size=3)
        self.num_classes = num_classes
        self.in_channels = in_channels

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = list(self.encoder.feature_maps(x))
        holes = []
        h, w = maps[0].shape[-2:]
        for _ in range(self.n_placeholders):
            h, w = min(h * 2, x.shape[-2]), min(w * 2, x.shape[-1])
            holes.insert(0, x.new_zeros(x.shape[0], 0, h, w))
        return [x, *holes, *maps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.pyramid(x)))
