"""LVM-Med release weights (reference §4).

- ``lvmmed-r50``: ``lvmmed_resnet.torch`` is a flat torchvision ResNet-50 state dict (``fc.*`` may be
  present and is ignored). It loads strictly into the torchvision adapter.
- ``lvmmed-vitb``: ``lvmmed_vit.pth`` is a flat SAM ``ImageEncoderViT`` state dict without
  ``pos_embed`` (built with ``use_abs_pos=False``). We use timm's ``samvit_base_patch16`` (the same
  network), rename SAM's ``mlp.lin1/lin2`` to timm's ``fc1/fc2`` and resample the global-attention
  relative position tables to the working image size, as SAM itself does at run time. As in
  LVM-Med's classification wrapper, the pooled embedding is the 768-d token grid before the neck.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.nn import functional as F

from lvmbench.encoders import ENCODERS
from lvmbench.encoders.adapters import TimmEncoder, TorchvisionResNet
from lvmbench.encoders.checkpoint import load_into, read_state_dict
from lvmbench.errors import CheckpointError

R50_FILE_HINT = "LVM-Med's lvmmed_resnet.torch (README of duyhominhnguyen/LVM-Med, 'Pretrained weights')"
VIT_FILE_HINT = "LVM-Med's lvmmed_vit.pth (README of duyhominhnguyen/LVM-Med, 'Pretrained weights')"


def _require(weights: Path | None, name: str, hint: str) -> Path:
    if weights is None:
        raise CheckpointError(
            f"encoder '{name}' needs its release file; nothing is downloaded at run time",
            fix=f"download {hint} and pass --weights PATH (or use --encoder resnet50 for random init)",
        )
    return weights


@ENCODERS.register("lvmmed-r50")
def lvmmed_r50(weights: Path | None) -> TorchvisionResNet:
    path = _require(weights, "lvmmed-r50", R50_FILE_HINT)
    enc = TorchvisionResNet("resnet50")
    enc._load_report = load_into(enc, read_state_dict(path), allow_unexpected=("fc.*",), path=path).as_dict()
    return enc


class LvmMedViT(TimmEncoder):
    def __init__(self, img_size: int = 224):
        # Pre-neck 768-d tokens at stride 16 for the pyramid and, averaged ("avg"), the embedding
        # ("head" would average the 256-d neck output, which LVM-Med's wrapper drops).
        super().__init__("samvit_base_patch16", img_size=img_size, pooling="avg", use_abs_pos=False)


def _sam_to_timm(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("image_encoder.")
        k = k.replace("mlp.lin1.", "mlp.fc1.").replace("mlp.lin2.", "mlp.fc2.")
        if re.search(r"attn\.rel_pos_[hw]$", k) and k in target and v.shape != target[k].shape:
            n = target[k].shape[0]
            v = F.interpolate(v.float().T[None], size=n, mode="linear", align_corners=False)[0].T
        out[k] = v
    return out


@ENCODERS.register("lvmmed-vitb")
def lvmmed_vitb(weights: Path | None) -> LvmMedViT:
    path = _require(weights, "lvmmed-vitb", VIT_FILE_HINT)
    enc = LvmMedViT()
    sd = _sam_to_timm(read_state_dict(path), enc.model.state_dict())
    enc._load_report = load_into(enc.model, sd, allow_unexpected=("neck.*",), allow_missing=("pos_embed",), path=path).as_dict()
    return enc
