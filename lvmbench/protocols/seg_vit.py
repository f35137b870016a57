"""End-to-end segmentation for ViT encoders: ``seg2d-vit`` and ``seg3d-vit``.

The same U-Net runs as ``seg2d``/``seg3d`` (smp's decoder over the encoder's pyramid); a plain ViT's
pyramid is ViTDet's simple feature pyramid from its last block (``lvmbench.encoders.adapters``), so
the decoder sees strides 4..32 as from a CNN. Separate protocol names carry the paper's ViT
schedule ("Foundation Model" column of Tables 7-8: e.g. Kvasir 1e-3 / 200 epochs / batch 64, BraTS
1e-4 / 100 / 16) in each task file, and keep ViT rows apart from the R50 recipe's on the leaderboard.
"""

from __future__ import annotations

from lvmbench.protocols import declared
from lvmbench.protocols.base import PROTOCOLS
from lvmbench.protocols.seg2d import Seg2D
from lvmbench.protocols.seg3d import Seg3D


@PROTOCOLS.register("seg2d-vit")
class Seg2DViT(declared.Seg2DViT, Seg2D):
    """seg2d's loop under the ViT settings (the paper's end-to-end ViT column)."""


@PROTOCOLS.register("seg3d-vit")
class Seg3DViT(declared.Seg3DViT, Seg3D):
    """seg3d's loop under the ViT settings."""
