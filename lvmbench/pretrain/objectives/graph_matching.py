"""LVM-Med's second-order graph-matching objective (Nguyen et al., NeurIPS 2023, §3.2, Alg. 1).

Per step: both views of N images -> encoder feature maps y -> pooled vector (the encoder's
``pooling``, by default ``avg``: the average-pooled last backbone map) -> projector z (128-d)
-> the batch is cut into graphs of ``graph_size`` (16) images; graph G^s holds their s-views, G^t
their t-views -> k-NN edges (k = 5) in z space -> shared 2-layer GCN -> ẑ -> vertex affinities
(global cosine + local feature-map term) and edge affinities (cosines of ẑ differences) -> one
quadratic assignment per graph, solved for all graphs at once (``solver``) with Gumbel noise ->
Hamming loss to the identity matching (view i of G^s is image i of G^t) -> IMLE gradients.

The pretraining code was never released (reference §0); choices the paper does not fix are
documented where they are made. Ablation switches (paper Table 6): ``second_order=False`` (vertex
matching only: an exact linear assignment), ``message_passing=False`` (ẑ = z), ``gcn_residual=True``
(ẑ = z + g(z) instead of the paper's ẑ = g(z); not in the paper), ``gumbel=False``
(no noise; a constant ``margin`` is added to the wrong pairs' scores instead, the blackbox-
differentiation recipe the paper refers to) and ``local=False`` (vertex score = global cosine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field, Strict
from torch import nn

from lvmbench.encoders.base import Encoder
from lvmbench.kit import Bool, Fraction01, NonNegFloat, PosFloat, PosInt
from lvmbench.pretrain.affinity import edge_affinity, local_affinity, vertex_affinity
from lvmbench.pretrain.gcn import GCN, knn_adjacency
from lvmbench.pretrain.imle import SectionTimer, gumbel_like, hamming, imle_match
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch, PretrainObjective, Width
from lvmbench.pretrain.solver import SolverConfig, no_autocast, solve_qap, solve_qap_loop

SOLVERS = {"batched": solve_qap, "loop": solve_qap_loop}


def make_projector(in_dim: int, out_dim: int, hidden: Sequence[int] = ()) -> nn.Module:
    """The paper gives the projector only as 2048→128 (R50) / 768→128 (ViT): one linear layer by
    default; ``hidden`` adds Linear-BN-ReLU blocks in front for experiments."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


@OBJECTIVES.register("graph-matching")
class GraphMatching(PretrainObjective):
    name = "graph-matching"

    def __init__(
        self,
        encoder: Encoder,
        proj_dim: Width = 128,
        proj_hidden: tuple[Width, ...] = (),
        graph_size: Annotated[int, Strict(), Field(ge=2)] = 16,
        knn: PosInt = 5,
        gcn_hidden: Width = 128,
        gcn_residual: Bool = False,
        alpha: Fraction01 = 0.8,
        gamma: PosInt = 20,
        lam: PosFloat = 80.0,
        noise_scale: NonNegFloat = 1.0,
        margin: NonNegFloat = 0.2,
        second_order: Bool = True,
        message_passing: Bool = True,
        gumbel: Bool = True,
        local: Bool = True,
        solver: Literal["batched", "loop"] = "batched",
        solver_options: SolverConfig | None = None,
    ):
        super().__init__(encoder)
        if graph_size < 2:
            raise ValueError("graph_size must be at least 2")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
        self.proj_dim, self.graph_size, self.knn = proj_dim, graph_size, knn
        self.batch_multiple = graph_size  # the trainer checks per-process batches against it
        self.alpha, self.gamma, self.lam = alpha, gamma, lam
        self.noise_scale, self.margin = noise_scale, margin
        self.second_order, self.message_passing, self.gumbel, self.local = second_order, message_passing, gumbel, local
        self.solver_name = solver
        self.solver_cfg = SolverConfig(**(solver_options or {}))
        # Fed the encoder's own pooled vector (``forward_pooled``), the one ``embed`` returns at
        # evaluation: the pretrainer records ``encoder.pooling`` in the checkpoint's metadata.
        self.projector = make_projector(encoder.embed_dim, proj_dim, proj_hidden)
        # Only built when used: every parameter must receive a gradient (DistributedDataParallel).
        self.gcn = GCN(proj_dim, gcn_hidden, proj_dim) if message_passing else None
        self.gcn_residual = gcn_residual
        self.timer = SectionTimer()

    def settings(self, options: dict) -> dict:
        out = super().settings(options)
        out["solver_options"] = dataclasses.asdict(self.solver_cfg)  # every solver field, resolved
        return out

    def _solve(self, theta_v: torch.Tensor, theta_e: torch.Tensor | None) -> torch.Tensor:
        return SOLVERS[self.solver_name](theta_v, theta_e, self.solver_cfg)

    def forward(self, batch: PretrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        n_img = batch.view1.shape[0]
        n = self.graph_size
        if n_img % n:
            raise ValueError(f"batch of {n_img} images is not a multiple of graph_size {n}")
        g = n_img // n
        dev = batch.view1.device
        with self.timer("encoder", dev):
            # Global vector = the encoder's pooled embedding: with pooling "avg" the average-pooled
            # last backbone map (paper §3.2 step 2; for a ViT its last-block token grid). The local
            # term uses y, the last map of the encoder's pyramid.
            maps, pooled = self.encoder.forward_pooled(torch.cat([batch.view1, batch.view2]))
            y = maps[-1]
            z = self.projector(pooled)
        with self.timer("affinity", dev), no_autocast(dev):
            # Cosines, top-γ selections and the solver's inputs stay in float32 under bf16 autocast
            # (CUDA's in training, CPU's too: the region is off on whichever device runs it).
            y, z = y.float(), z.float()
            ys, yt = y[:n_img].unflatten(0, (g, n)), y[n_img:].unflatten(0, (g, n))
            zs, zt = z[:n_img].unflatten(0, (g, n)), z[n_img:].unflatten(0, (g, n))
            adj_s, adj_t = knn_adjacency(zs, self.knn), knn_adjacency(zt, self.knn)
            if self.gcn is not None:
                # ẑ = g(z), the paper's form (§3.2 step 3). gcn_residual=True is an ablation:
                # ẑ = z + g(z). Each GCN layer gives a node only 1/(degree + 1) of its own
                # feature, so after two layers on a k = 5 graph ẑ is mostly its neighbours'
                # average and the s- and t-graphs have different neighbours; on one fixed batch
                # vertex top-1 stayed near chance with g(z) and rose with the residual form.
                hs, ht = self.gcn(zs, adj_s), self.gcn(zt, adj_t)
                zs, zt = (zs + hs, zt + ht) if self.gcn_residual else (hs, ht)
            loc = None
            if self.local:
                bs = batch.boxes1.to(dev).float().unflatten(0, (g, n))
                bt = batch.boxes2.to(dev).float().unflatten(0, (g, n))
                loc = local_affinity(ys, yt, bs, bt, self.gamma)
            theta_v = vertex_affinity(zs, zt, loc, self.alpha)
            theta_e = edge_affinity(zs, zt, adj_s, adj_t) if self.second_order else None
            target = torch.eye(n, device=dev).expand(g, n, n)
            if self.gumbel:
                eps_v = self.noise_scale * gumbel_like(theta_v)
                eps_e = None
                if theta_e is not None:
                    mask = adj_s[:, :, None, :, None] * adj_t[:, None, :, None, :]
                    eps_e = self.noise_scale * gumbel_like(theta_e) * mask
            else:
                # The wrong pairs get a head start, so gradients keep flowing until the right
                # pairs win by ``margin`` (the paper says "a constant"; its value is our choice).
                eps_v, eps_e = self.margin * (1 - target), None
        with no_autocast(dev):  # the solve and its IMLE backward are float32 (imle_match too)
            x = imle_match(theta_v, theta_e, self._solve, lam=self.lam, eps_v=eps_v, eps_e=eps_e, timer=self.timer)
            per_graph = hamming(x, target) / (2 * n)  # fraction of the 2n possible disagreements
        loss = per_graph.mean()
        self.remember(embedding=pooled[:n_img], projection=z[:n_img])
        with torch.no_grad():
            top1 = (theta_v.argmax(dim=2) == torch.arange(n, device=dev)).float().mean()
            matched = torch.diagonal(x, dim1=1, dim2=2).mean()
            diag = torch.eye(n, dtype=torch.bool, device=dev).expand(g, n, n)
            # Signal against noise: the right pairs' vertex score minus the others', next to the
            # Gumbel noise's spread (π/√6 ≈ 1.28 × noise_scale) that the forward solve adds.
            gap = theta_v[diag].mean() - theta_v[~diag].mean()
        logs = {"loss": float(loss.detach()), "match_acc": float(matched), "vertex_top1": float(top1), "vertex_gap": float(gap), "graphs": float(g)}
        if self.diagnose:
            # The matcher's own answer, without the training noise: its agreement with the
            # identity matching of the two views is what the objective drives towards 1.
            with torch.no_grad(), no_autocast(dev):
                clean = self._solve(theta_v.detach().float(), None if theta_e is None else theta_e.detach().float())
            logs["match_acc_clean"] = float(torch.diagonal(clean, dim1=1, dim2=2).mean())
            logs["graphs_exact_clean"] = float((torch.diagonal(clean, dim1=1, dim2=2).sum(-1) == n).float().mean())
        return loss, logs
