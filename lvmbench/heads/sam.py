"""SAM's prompt encoder and mask decoder over any encoder (the prompt-based protocols).

The two modules are ``segment_anything``'s own classes (``PromptEncoder``, ``MaskDecoder``,
``TwoWayTransformer``) under SAM's attribute names, so the ``prompt_encoder.*`` and
``mask_decoder.*`` parts of Meta's ``sam_vit_b_01ec64.pth``, MedSAM's checkpoints and LVM-Med's
trained prompt checkpoints load strictly (``load_sam_decoder``). Without a checkpoint both are
randomly initialised (seeded).

The image embedding SAM's decoder reads is 256 x (P/16) x (P/16) for a P-pixel input (64 x 64 at
SAM's 1024). SAM-style encoders (``has_sam_neck``: ``sam-vitb``, ``medsam-vitb``, ``lvmmed-vitb``)
give it through their own neck, loaded with their weights and frozen with them. Any other encoder
goes through ``PromptNeck``: SAM's neck design (1x1 conv, LayerNorm, 3x3 conv, LayerNorm to 256
channels; LVM-Med added the same 1x1 + 3x3 convolutions to its ViT, reference §3) on the encoder's
stride-16 map (a plain ViT's last-block token grid), resampled to the embedding grid when the
stride differs. A new neck is trained with the mask decoder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from timm.layers import LayerNorm2d
from torch import nn
from torch.nn import functional as F

from lvmbench.encoders.base import Encoder
from lvmbench.encoders.checkpoint import LoadReport, load_into, read_state_dict

PATCH = 16  # SAM's image embedding is at stride 16


class BatchedMaskDecoder(MaskDecoder):
    """SAM's ``MaskDecoder`` for a batch of images with one box each.

    SAM's own ``predict_masks`` is written for one image and many prompts: it repeats the image
    embedding once per prompt, so a batch of B images with B boxes would make B x B pairs. Here the
    i-th box is paired with the i-th image; the modules (and so the state dict) are SAM's.
    """

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        b = image_embeddings.shape[0]
        if b == 1 or sparse_prompt_embeddings.shape[0] != b:
            return super().predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        mask_tokens = hs[:, 1 : 1 + self.num_mask_tokens]
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ up.flatten(2)).view(b, -1, *up.shape[-2:])
        return masks, self.iou_prediction_head(hs[:, 0])


class PromptNeck(nn.Module):
    """Encoder map (C at any stride) -> SAM image embedding (embed_dim x grid x grid)."""

    def __init__(self, in_channels: int, embed_dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, embed_dim, 1, bias=False),
            LayerNorm2d(embed_dim),
            nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False),
            LayerNorm2d(embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.grid, self.grid):
            x = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return self.net(x)


class SamDecoder(nn.Module):
    """``prompt_encoder`` + ``mask_decoder`` under SAM's names: its state dict is the decoder part
    of a SAM checkpoint, key for key."""

    def __init__(self, image_size: int = 1024, embed_dim: int = 256, depth: int = 2, mlp_dim: int = 2048, num_heads: int = 8, mask_in_chans: int = 16, iou_hidden: int = 256):
        super().__init__()
        grid = image_size // PATCH
        self.prompt_encoder = PromptEncoder(embed_dim=embed_dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=mask_in_chans)
        self.mask_decoder = BatchedMaskDecoder(
            transformer_dim=embed_dim,
            transformer=TwoWayTransformer(depth=depth, embedding_dim=embed_dim, mlp_dim=mlp_dim, num_heads=num_heads),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_hidden,
        )
        self.image_size, self.grid, self.embed_dim = image_size, grid, embed_dim

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor | None, points: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings (B, D, g, g) + one xyxy box per image (B, 4) and/or points (B, k, 2)
        with SAM's labels (B, k: 1 object, 0 background, -1 none), in input pixels -> mask logits
        (B, 1, 4g, 4g): SAM's single-mask output (``multimask_output=False``)."""
        pts = (points, labels) if points is not None and points.shape[1] > 0 else None
        sparse, dense = self.prompt_encoder(points=pts, boxes=boxes, masks=None)
        masks, _ = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return masks


def load_sam_decoder(decoder: SamDecoder, path: str | Path) -> dict:
    """Load ``prompt_encoder.*`` and ``mask_decoder.*`` strictly from a SAM-layout checkpoint; the
    ``image_encoder.*`` part of a whole-SAM file belongs to ``--weights`` and is skipped here."""
    sd = read_state_dict(path)
    skipped = [k for k in sd if k.startswith("image_encoder.")]
    rest = {k: v for k, v in sd.items() if not k.startswith("image_encoder.")}
    report: LoadReport = load_into(decoder, rest, allow_unexpected=(), path=path)
    out = report.as_dict()
    out["skipped_image_encoder_keys"] = len(skipped)
    return out


def source_spec(encoder: Encoder) -> tuple[int, str]:
    """(channels, which map) of the encoder map the prompt decoder is fed from.

    ``sam``: the encoder's own SAM neck output; ``tokens``: a plain ViT's last-block grid;
    ``level<i>``: pyramid level i of a CNN/hierarchical encoder, the one at stride 16 (SAM's), else
    the deepest one below it.
    """
    if getattr(encoder, "has_sam_neck", False):
        return int(encoder.neck_chans), "sam"  # type: ignore[attr-defined]
    if getattr(encoder, "_single_stride", False):
        return int(encoder.pyramid.channels[2]), "tokens"  # type: ignore[attr-defined]
    strides = list(encoder.feature_info.strides)
    below = [i for i, s in enumerate(strides) if s <= PATCH]
    i = max(below, key=lambda j: strides[j]) if below else 0
    return int(encoder.feature_info.channels[i]), f"level{i}"


def source_features(encoder: Encoder, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind in ("sam", "tokens"):
        return encoder.image_embedding(x)  # type: ignore[attr-defined]
    return encoder.feature_maps(x)[int(kind.removeprefix("level"))]


class PromptSegModel(nn.Module):
    """Frozen encoder -> (its SAM neck | a new ``PromptNeck``) -> SAM prompt encoder + mask decoder.

    ``encode`` runs the frozen encoder once per image (its output is cached by the protocol);
    ``forward`` maps cached features + box and/or point prompts to mask logits.
    """

    def __init__(self, encoder: Encoder, decoder: SamDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        chans, self.kind = source_spec(encoder)
        self.own_neck = self.kind == "sam" and chans == decoder.embed_dim
        self.neck: nn.Module = nn.Identity() if self.own_neck else PromptNeck(chans, decoder.embed_dim, decoder.grid)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> PromptSegModel:
        super().train(mode)
        self.encoder.eval()  # frozen, BatchNorm statistics included
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return source_features(self.encoder, x, self.kind)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor | None, points: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.neck(features), boxes, points, labels)
