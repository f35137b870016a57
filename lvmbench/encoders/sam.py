"""SAM-style ViT image encoders (reference §3-§4) and the one loader of SAM-layout weights.

Three release files share SAM's ``ImageEncoderViT`` layout:

- Meta's ``sam_vit_b_01ec64.pth`` and MedSAM's ``medsam_vit_b.pth``: a whole ``Sam`` state dict,
  ``image_encoder.*`` + ``prompt_encoder.*`` + ``mask_decoder.*``; ``--encoder sam-vitb`` (or
  ``medsam-vitb``, the same network under its own name) loads the ``image_encoder.*`` part, the
  prompt protocols load the other two from their ``decoder_weights`` setting.
- LVM-Med's ``lvmmed_vit.pth``: the image encoder alone, no prefix, no ``pos_embed``
  (``lvmbench.encoders.lvmmed``).

The network is timm's ``samvit_base_patch16``, the same computation as ``segment_anything``'s
``ImageEncoderViT`` (``tests/test_vit_encoders.py`` checks outputs agree on the same weights) that
also resamples its absolute and relative position tables to any input size and gives
``forward_intermediates`` for the dense heads. Only SAM's ``mlp.lin1``/``lin2`` are renamed.
Built at 1024 px, as the release files were, so their position tables load unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed_nhwc
from torch.nn import functional as F

from lvmbench.encoders.adapters import TimmEncoder
from lvmbench.encoders.checkpoint import load_into, read_state_dict
from lvmbench.encoders.registry import ENCODERS

SAM_IMG_SIZE = 1024
# SAM ViT-B (segment_anything.build_sam_vit_b): 768 wide, 12 blocks, global attention in 2, 5, 8, 11
SAM_VIT_B = {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11), "window_size": 14, "neck_chans": 256}
# Parts of a whole-SAM checkpoint that are not the image encoder (loaded by the prompt protocols)
SAM_DECODER_KEYS = ("prompt_encoder.*", "mask_decoder.*")


class SamViT(TimmEncoder):
    """SAM's ViT image encoder. ``image_embedding`` is its neck output (N, 256, H/16, W/16), what
    SAM's mask decoder reads; ``embed`` averages the pre-neck token grid (LVM-Med's ViT wrapper)."""

    has_sam_neck = True

    def __init__(self, img_size: int = SAM_IMG_SIZE, use_abs_pos: bool = True, **arch):
        cfg = {**SAM_VIT_B, **arch}
        cfg["global_attn_indexes"] = tuple(cfg["global_attn_indexes"])
        super().__init__("samvit_base_patch16", img_size=img_size, pooling="avg", use_abs_pos=use_abs_pos, use_rel_pos=True, **cfg)
        self.neck_chans = int(cfg["neck_chans"])


def sam_to_timm(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAM ``ImageEncoderViT`` keys -> timm ``VisionTransformerSAM`` keys; position tables of another
    build size are resampled to the target's, as SAM itself does at run time."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("image_encoder.")
        k = k.replace("mlp.lin1.", "mlp.fc1.").replace("mlp.lin2.", "mlp.fc2.")
        if k in target and v.shape != target[k].shape:
            if re.search(r"attn\.rel_pos_[hw]$", k):
                n = target[k].shape[0]
                v = F.interpolate(v.float().T[None], size=n, mode="linear", align_corners=False)[0].T
            elif k == "pos_embed" and v.ndim == 4:
                v = resample_abs_pos_embed_nhwc(v.float(), tuple(target[k].shape[1:3]))
        out[k] = v
    return out


def load_sam_encoder(enc: SamViT, sd: dict[str, torch.Tensor], path: Path | None, *, allow_missing: tuple[str, ...] = ()) -> dict:
    """Load a SAM-layout image encoder strictly (decoder parts of a whole-SAM file are ignored)."""
    mapped = sam_to_timm(sd, enc.model.state_dict())
    return load_into(enc.model, mapped, allow_unexpected=SAM_DECODER_KEYS, allow_missing=allow_missing, path=path).as_dict()


def _sam_vitb(weights: Path | None) -> SamViT:
    enc = SamViT()
    if weights is not None:
        enc._load_report = load_sam_encoder(enc, read_state_dict(weights), weights)
    return enc


ENCODERS.register("sam-vitb")(_sam_vitb)
ENCODERS.register("medsam-vitb")(_sam_vitb)
