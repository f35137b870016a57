"""LVM-Med release weights (reference §4).

- ``lvmmed-r50``: ``lvmmed_resnet.torch`` is a flat torchvision ResNet-50 state dict (``fc.*`` may be
  present and is ignored). It loads strictly into the torchvision adapter.
- ``lvmmed-vitb``: ``lvmmed_vit.pth`` is a flat SAM ``ImageEncoderViT`` state dict without
  ``pos_embed`` (built with ``use_abs_pos=False``). It loads through the SAM loader
  (``lvmbench.encoders.sam``: timm's ``samvit_base_patch16``, SAM's ``mlp.lin1/lin2`` renamed). As in
  LVM-Med's classification wrapper, the pooled embedding is the 768-d token grid before the neck.
"""

from __future__ import annotations

from pathlib import Path

from lvmbench.encoders.adapters import TorchvisionResNet
from lvmbench.encoders.checkpoint import load_into, read_state_dict
from lvmbench.encoders.registry import ENCODERS
from lvmbench.encoders.sam import SAM_IMG_SIZE, SamViT, load_sam_encoder
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


lvmmed_r50.architecture = "cnn"  # lvmbench.encoders.kinds: known without the release file


class LvmMedViT(SamViT):
    """SAM's ViT-B without absolute position embeddings, built at 1024 px as the release file was
    (its relative position tables load unchanged; timm resamples them to each input size). The
    pooled embedding is the 768-d token grid before the neck ("avg"), as LVM-Med's ViT wrapper; the
    neck (in the file) gives the 256-channel embedding the prompt protocols feed SAM's decoder."""

    def __init__(self, img_size: int = SAM_IMG_SIZE, **arch):
        super().__init__(img_size=img_size, use_abs_pos=False, **arch)


@ENCODERS.register("lvmmed-vitb")
def lvmmed_vitb(weights: Path | None) -> LvmMedViT:
    path = _require(weights, "lvmmed-vitb", VIT_FILE_HINT)
    enc = LvmMedViT()
    enc._load_report = load_sam_encoder(enc, read_state_dict(path), path, allow_missing=("pos_embed",))
    return enc


lvmmed_vitb.architecture = "transformer"
