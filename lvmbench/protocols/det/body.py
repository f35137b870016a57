"""The encoder as a detection backbone body: pyramid levels at strides 4..32, the paper's freezing.

``EncoderBody`` registers the encoder's own submodules under their own names, so the detector's keys
are ``<prefix>.<encoder key>``: ``backbone.body.conv1.weight`` in the torchvision detector (as in
torchvision's ``fasterrcnn_resnet50_fpn``) and ``backbone.conv1.weight`` in the mmdet detector (as in
mmdet's ResNet and in LVM-Med's ``backbone.``-prefixed ``tmp.pth``).

Freezing follows mmdet's ``ResNet(frozen_stages=1, norm_eval=True)`` used by LVM-Med: the stem and the
first stage (every parameter that only feeds maps of stride <= 4) get no gradient and stay in eval
mode; with ``norm_eval`` every BatchNorm keeps its running statistics (its affine weights still train
outside the frozen part).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lvmbench.encoders.adapters import TimmEncoder, TorchvisionResNet
from lvmbench.encoders.base import Encoder
from lvmbench.errors import UserError

FPN_STRIDES = (4, 8, 16, 32)


class EncoderBody(nn.Module):
    def __init__(self, encoder: Encoder, strides: Sequence[int] = FPN_STRIDES):
        super().__init__()
        info = encoder.feature_info
        missing = [s for s in strides if s not in info.strides]
        if missing:
            raise UserError(
                f"encoder gives feature maps at strides {list(info.strides)}, an FPN needs {list(strides)} (missing {missing})",
                fix="use a CNN or a ViT with a simple pyramid (see lvmbench.encoders.adapters)",
            )
        self.__dict__["encoder"] = encoder  # not a submodule: its children are registered below
        for name, child in encoder.named_children():
            self.add_module(name, child)
        for name, p in encoder.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in encoder.named_buffers(recurse=False):
            self.register_buffer(name, b)
        # The last map of each requested stride (a ViT pyramid has one per stride anyway).
        self.indices = [max(i for i, s in enumerate(info.strides) if s == want) for want in strides]
        self.channels = [int(info.channels[i]) for i in self.indices]
        self.strides = list(strides)
        self.frozen: list[str] = []
        self.norm_eval = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.encoder.feature_maps(x)
        return [maps[i] for i in self.indices]

    def freeze(self, frozen_stages: int, norm_eval: bool) -> list[str]:
        """Apply the paper's freezing; returns the frozen parameter names (for the result record)."""
        self.norm_eval = bool(norm_eval)
        self.frozen = frozen_parameter_names(self.encoder) if frozen_stages >= 1 else []
        params = dict(self.named_parameters())
        for name in self.frozen:
            params[name].requires_grad_(False)
        self.train(self.training)
        return self.frozen

    def train(self, mode: bool = True) -> "EncoderBody":
        super().train(mode)
        self.encoder.training = mode
        if mode:
            frozen_modules = {n.rsplit(".", 1)[0] for n in self.frozen}
            for name, m in self.named_modules():
                if name in frozen_modules or (self.norm_eval and isinstance(m, nn.modules.batchnorm._BatchNorm)):
                    m.eval()
        return self


def frozen_parameter_names(encoder: Encoder) -> list[str]:
    """Parameters of the stem and first stage (mmdet ``frozen_stages=1``), in the encoder's key space.

    torchvision ResNets: ``conv1``, ``bn1``, ``layer1``. timm models: every parameter registered before
    the first module whose output has stride > 4 (ResNets: stem + layer1; ConvNeXt: stem + stages.0;
    ViTs, whose first block is already at stride 16: the patch embedding). Other encoders: none.
    """
    if isinstance(encoder, TorchvisionResNet):
        return [n for n, _ in encoder.named_parameters() if n.split(".")[0] in ("conv1", "bn1", "layer1")]
    if isinstance(encoder, TimmEncoder):
        info = encoder.model.feature_info
        mods = info.module_name() if hasattr(info, "module_name") else [f["module"] for f in info]
        reds = info.reduction() if hasattr(info, "reduction") else [f["reduction"] for f in info]
        first_deep = next((m for m, r in zip(mods, reds) if r > 4), None)
        out = []
        for n, _ in encoder.model.named_parameters():
            if first_deep is not None and (n == first_deep or n.startswith(first_deep + ".")):
                break
            out.append(f"model.{n}")
        return out
    return []
