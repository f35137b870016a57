"""MLVICX (Singh, Gorade, Mishra; JBHI 2024): VICReg on a global and a multi-level local branch.

Re-implemented from the description in reference/similarity-seeds.md §4 (the official code has no
licence). Siamese, shared weights, no momentum encoder or predictor:

- global branch: the encoder's pooled embedding (``forward_pooled``; with pooling ``avg`` the
  average-pooled last stage, as in MLVICX) -> projector (Linear-BN-ReLU ×2, Linear-BN);
- local branch: every stage map of ``encoder.feature_maps(x)`` -> bilinear resize to
  ``local_size``² and a 1×1 conv to ``local_channels`` (in-channels from
  ``encoder.feature_info.channels``, the stage *output* channels; the official code read
  ``conv2`` widths, which is wrong for Bottleneck ResNets) -> summed -> adaptive average pool to
  ``local_pool``² -> flatten -> projector of the same shape;
- loss ``L = ℓ(z_G, z'_G) + λ ℓ(z_L, z'_L)``, ℓ the VICReg term (25/25/1, γ 1, ε 1e-4), λ =
  ``lambda_local`` (1.0: the official code's implicit value).

Every submodule is built here, eagerly, so the optimiser built from ``objective.parameters()``
sees all of them. The official code created its 1×1 convs lazily in the first forward, after the
optimiser existed, so they never trained; ``freeze_level_convs=True`` reproduces that (the convs
stay at their initialisation). The context bottleneck (CBAM after each stage) is not implemented:
it changes the backbone's own forward pass between stages, which the encoder contract
(``feature_maps``) does not expose.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lvmbench.encoders.base import Encoder
from lvmbench.kit import Bool, NonNegFloat, PosFloat, PosInt
from lvmbench.losses.vicreg import vicreg_terms
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch, PretrainObjective, Width


def projector(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """MLVICX / VICReg expander: Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN (no final ReLU)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out),
        nn.BatchNorm1d(out),
    )


class MultiLevelFuse(nn.Module):
    """Stage maps -> common size -> 1×1 conv to a common width -> sum."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 512, out_size: int = 64):
        super().__init__()
        self.out_size = out_size
        self.convs = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in in_channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(maps) != len(self.convs):
            raise ValueError(f"{len(maps)} feature maps for {len(self.convs)} level convs")
        size = (self.out_size, self.out_size)
        fused = None
        for m, conv in zip(maps, self.convs):
            # A 1×1 conv commutes with bilinear resampling (its weights sum to 1, so the bias
            # passes through too): convolve at whichever resolution is smaller.
            if m.shape[-2] * m.shape[-1] <= size[0] * size[1]:
                y = F.interpolate(conv(m), size=size, mode="bilinear", align_corners=False)
            else:
                y = conv(F.interpolate(m, size=size, mode="bilinear", align_corners=False))
            fused = y if fused is None else fused + y
        assert fused is not None
        return fused


@OBJECTIVES.register("mlvicx")
class MLVICX(PretrainObjective):
    name = "mlvicx"

    def __init__(
        self,
        encoder: Encoder,
        proj_hidden: Width = 4096,
        proj_out: Width = 4096,
        local_channels: Width = 512,
        local_size: PosInt = 64,
        local_pool: PosInt = 4,
        local_hidden: Width = 4096,
        local_out: Width = 4096,
        lambda_local: NonNegFloat = 1.0,
        sim_coeff: NonNegFloat = 25.0,
        std_coeff: NonNegFloat = 25.0,
        cov_coeff: NonNegFloat = 1.0,
        gamma: PosFloat = 1.0,
        eps: PosFloat = 1e-4,
        freeze_level_convs: Bool = False,
    ):
        super().__init__(encoder)
        if local_pool > local_size:
            raise ValueError(f"local_pool ({local_pool}) must not exceed local_size ({local_size}): it pools the local_size² map")
        self.local_size = local_size
        chans = tuple(int(c) for c in encoder.feature_info.channels)
        self.global_projector = projector(encoder.embed_dim, proj_hidden, proj_out)
        self.fuse = MultiLevelFuse(chans, local_channels, local_size)
        self.local_pool = local_pool
        self.local_projector = projector(local_channels * local_pool * local_pool, local_hidden, local_out)
        self.lambda_local = float(lambda_local)
        self.vicreg_kw = dict(sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff, gamma=gamma, eps=eps)
        self.freeze_level_convs = bool(freeze_level_convs)
        if self.freeze_level_convs:
            self.fuse.requires_grad_(False)

    def check_view_size(self, size: int) -> None:
        # The fused map is resampled to local_size²: finer than the views adds memory, not detail
        # (local_size 1000 on 32-px views exhausts 24 GB before the first step).
        if self.local_size > size:
            raise ValueError(f"local_size {self.local_size} is larger than the {size}-px views; set -o local_size=N with N <= {size} (MLVICX: 64 for 224-px views)")

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global, local) projections of one view."""
        maps, pooled = self.encoder.forward_pooled(x)
        self._pooled = pooled.detach()  # forward() remembers the first view's for the monitors
        g = self.global_projector(pooled)
        fused = F.adaptive_avg_pool2d(self.fuse(maps), self.local_pool)
        return g, self.local_projector(torch.flatten(fused, 1))

    def forward(self, batch: PretrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        # views go through separately: BatchNorm statistics are per view, as in VICReg
        g1, l1 = self.project(batch.view1)
        self.remember(embedding=self._pooled, projection=g1)
        g2, l2 = self.project(batch.view2)
        tg = vicreg_terms(g1, g2, **self.vicreg_kw)
        tl = vicreg_terms(l1, l2, **self.vicreg_kw)
        loss = tg.total + self.lambda_local * tl.total
        logs = {"loss": float(loss.detach()), **tg.logs("global_"), **tl.logs("local_")}
        with torch.no_grad():  # collapse monitor: per-dimension std of the normalised projections
            logs["global_std"] = float(F.normalize(g1.float(), dim=1).std(dim=0).mean())
            logs["local_std"] = float(F.normalize(l1.float(), dim=1).std(dim=0).mean())
        return loss, logs
