"""SimCLR (Chen et al. 2020): a plain contrastive baseline beside LVM-Med's graph matching.

Both views of the batch go through the encoder in one pass (the pooled embedding the encoder
evaluates with, ``forward_pooled``), a projector (Linear-BN-ReLU-Linear, SimCLR v1's 2-layer MLP;
hidden width = the embedding's, output 128), and NT-Xent over the 2N projections
(``lvmbench.losses.ntxent``). Temperature 0.2: SimCLR's 0.1 is tuned for batches of 4096; with the
few hundred images a CPU step holds, 0.2–0.5 is the usual choice (SimCLR Table 5 / appendix B.9).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, Strict
from torch import nn

from lvmbench.encoders.base import Encoder
from lvmbench.kit import PosFloat
from lvmbench.losses.ntxent import nt_xent
from lvmbench.pretrain.objectives import MAX_WIDTH, OBJECTIVES, PretrainBatch, PretrainObjective, Width


@OBJECTIVES.register("simclr")
class SimCLR(PretrainObjective):
    name = "simclr"

    def __init__(self, encoder: Encoder, proj_hidden: Annotated[int, Strict(), Field(ge=0, le=MAX_WIDTH)] = 0, proj_dim: Width = 128, temperature: PosFloat = 0.2):
        super().__init__(encoder)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        hidden = proj_hidden or encoder.embed_dim  # 0: the embedding's width, as in SimCLR
        self.temperature = float(temperature)
        self.projector = nn.Sequential(nn.Linear(encoder.embed_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))

    def forward(self, batch: PretrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        n = batch.view1.shape[0]
        _, pooled = self.encoder.forward_pooled(torch.cat([batch.view1, batch.view2]))
        z = self.projector(pooled)
        loss, acc = nt_xent(z[:n], z[n:], self.temperature)
        self.remember(embedding=pooled[:n], projection=z[:n])
        return loss, {"loss": float(loss.detach()), "contrastive_acc": float(acc)}
