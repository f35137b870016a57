"""VICReg (Bardes et al. 2022): MLVICX's global branch alone, the plain baseline MLVICX extends.

Encoder's pooled embedding -> expander (Linear-BN-ReLU ×2, Linear-BN; 2048 wide by default, not
VICReg's 8192: a CPU batch of ~100 images cannot estimate an 8192² covariance, reference §4.8
pitfall 6) -> the VICReg term of ``lvmbench.losses.vicreg`` (25/25/1, γ 1, ε 1e-4). Views go
through separately so BatchNorm statistics are per view, as in VICReg.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lvmbench.encoders.base import Encoder
from lvmbench.kit import NonNegFloat, PosFloat
from lvmbench.losses.vicreg import vicreg_terms
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch, PretrainObjective, Width
from lvmbench.pretrain.objectives.mlvicx import projector


@OBJECTIVES.register("vicreg")
class VICReg(PretrainObjective):
    name = "vicreg"

    def __init__(
        self,
        encoder: Encoder,
        proj_hidden: Width = 2048,
        proj_out: Width = 2048,
        sim_coeff: NonNegFloat = 25.0,
        std_coeff: NonNegFloat = 25.0,
        cov_coeff: NonNegFloat = 1.0,
        gamma: PosFloat = 1.0,
        eps: PosFloat = 1e-4,
    ):
        super().__init__(encoder)
        self.expander = projector(encoder.embed_dim, proj_hidden, proj_out)
        self.vicreg_kw = {"sim_coeff": sim_coeff, "std_coeff": std_coeff, "cov_coeff": cov_coeff, "gamma": gamma, "eps": eps}

    def forward(self, batch: PretrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        _, p1 = self.encoder.forward_pooled(batch.view1)
        _, p2 = self.encoder.forward_pooled(batch.view2)
        z1, z2 = self.expander(p1), self.expander(p2)
        terms = vicreg_terms(z1, z2, **self.vicreg_kw)
        self.remember(embedding=p1, projection=z1)
        logs = {"loss": float(terms.total.detach()), **terms.logs()}
        logs.pop("total")
        with torch.no_grad():
            logs["proj_std"] = float(F.normalize(z1.float(), dim=1).std(dim=0).mean())
        return terms.total, logs
