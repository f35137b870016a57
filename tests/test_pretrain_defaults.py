"""The pretrainer's defaults are the paper's and are all recorded: ẑ = g(z) (the residual form is an
ablation switch), pretrain.json holds every resolved objective/solver setting, and the matching
solve (forward and IMLE backward) runs in float32 outside autocast."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import numpy as np
import pytest
import torch

from lvmbench.encoders import create_encoder
from lvmbench.pretrain.imle import hamming, imle_match
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch
from lvmbench.pretrain.objectives import graph_matching as gm_mod
from lvmbench.pretrain.solver import SolverConfig, solve_qap, solve_qap_loop

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int = 8, size: int = 32, seed: int = 0) -> PretrainBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    boxes = torch.rand(n, 4, generator=g)
    return PretrainBatch(x, x + 0.1 * torch.randn(x.shape, generator=g), boxes, boxes.clone())


def dense_gcn(gcn, z: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """Kipf–Welling by hand: Â = D̃^-1/2 (A + I) D̃^-1/2, ẑ = Â ReLU(Â Z W₁ᵀ + b₁) W₂ᵀ + b₂."""
    w1, w2 = gcn.lin1.weight.detach().double().numpy(), gcn.lin2.weight.detach().double().numpy()
    b1, b2 = gcn.bias1.detach().double().numpy(), gcn.bias2.detach().double().numpy()
    n = len(z)
    a = adj + np.eye(n)
    deg = a.sum(axis=1)
    a_hat = np.array([[a[i, j] / math.sqrt(deg[i] * deg[j]) for j in range(n)] for i in range(n)])
    return a_hat @ np.maximum(a_hat @ z @ w1.T + b1, 0) @ w2.T + b2


def _node_embeddings_seen(obj, batch: PretrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z from the projector, the adjacency of the s-graphs, ẑ_s handed to the vertex affinity)."""
    seen: dict[str, torch.Tensor] = {}
    h = obj.projector.register_forward_hook(lambda m, a, out: seen.setdefault("z", out.detach().clone()))
    real_vertex, real_knn = gm_mod.vertex_affinity, gm_mod.knn_adjacency

    def vertex(zs, zt, loc, alpha):
        seen["zhat"] = zs.detach().clone()
        return real_vertex(zs, zt, loc, alpha)

    def knn(z, k):
        adj = real_knn(z, k)
        seen.setdefault("adj", adj.clone())
        return adj

    gm_mod.vertex_affinity, gm_mod.knn_adjacency = vertex, knn
    try:
        with torch.no_grad():
            obj(batch)
    finally:
        gm_mod.vertex_affinity, gm_mod.knn_adjacency = real_vertex, real_knn
        h.remove()
    return seen["z"], seen["adj"], seen["zhat"]


@pytest.mark.parametrize("residual", [None, True])
def test_default_gcn_is_the_papers_g_of_z_and_the_residual_is_a_switch(residual):
    torch.manual_seed(0)
    enc, _ = create_encoder("resnet18")
    kw = {} if residual is None else {"gcn_residual": residual}
    obj = OBJECTIVES.get("graph-matching")(enc, graph_size=8, knn=2, proj_dim=6, gcn_hidden=5, **kw).eval()
    with torch.no_grad():
        obj.gcn.bias1.normal_()
        obj.gcn.bias2.normal_()
    z, adj, zhat = _node_embeddings_seen(obj, _batch())
    zs = z[:8].double().numpy()  # the s-views: one 8-node graph
    a = adj[0].double().numpy()
    # the graph is the hand-checkable k-NN relation of z (cosine, k = 2, symmetric union)
    zn = zs / np.linalg.norm(zs, axis=1, keepdims=True)
    ref_adj = np.zeros((8, 8))
    for i in range(8):
        sims = [(zn[i] @ zn[j], j) for j in range(8) if j != i]
        for _, j in sorted(sims, reverse=True)[:2]:
            ref_adj[i, j] = ref_adj[j, i] = 1
    assert np.array_equal(a, ref_adj)
    g = dense_gcn(obj.gcn, zs, a)
    want = zs + g if residual else g
    assert np.allclose(zhat[0].double().numpy(), want, atol=1e-5)


def test_gcn_on_a_hand_built_graph():
    """The GCN itself on a 4-node path graph, against the formula written out by hand."""
    from lvmbench.pretrain.gcn import GCN

    torch.manual_seed(3)
    gcn = GCN(3, 4, 2)
    with torch.no_grad():
        gcn.bias1.normal_()
        gcn.bias2.normal_()
    adj = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=torch.float32)
    z = torch.randn(4, 3)
    out = gcn(z[None], adj[None])[0].detach().double().numpy()
    assert np.allclose(out, dense_gcn(gcn, z.double().numpy(), adj.double().numpy()), atol=1e-5)


def _expected_settings(cls) -> dict:
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "encoder")}


def test_pretrain_json_records_every_resolved_setting(tmp_path):
    from pretrain_helpers import config, write_images

    from lvmbench.pretrain.objectives.graph_matching import GraphMatching
    from lvmbench.pretrain.trainer import train
    from lvmbench.pretrain.views import ViewConfig

    images = write_images(tmp_path / "images", 16)
    opts = {"lam": 70, "solver_options": {"restarts": 2}}
    train(config(images, tmp_path / "out", steps=1, objective_options=opts))
    meta = json.loads((tmp_path / "out" / "pretrain.json").read_text(encoding="utf-8"))
    got = meta["objective"]["settings"]
    want = _expected_settings(GraphMatching)
    assert set(got) == set(want)  # every constructor setting, typed or not
    want.update(lam=70, solver_options={**dataclasses.asdict(SolverConfig()), "restarts": 2})
    assert got == json.loads(json.dumps(want))
    assert got["gcn_residual"] is False and got["solver_options"]["beta_max"] == SolverConfig().beta_max
    assert meta["objective"]["options"] == opts  # what the user typed, kept apart
    assert meta["views"] == json.loads(json.dumps(dataclasses.asdict(ViewConfig(size=32))))
    # a resumed run must resolve to the same settings
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert state["objective_settings"] == got


def test_mlvicx_settings_have_every_default():
    from lvmbench.pretrain.objectives.mlvicx import MLVICX

    torch.manual_seed(0)
    obj = MLVICX(create_encoder("resnet18")[0], proj_hidden=16, proj_out=16)
    s = obj.settings({"proj_hidden": 16, "proj_out": 16})
    assert s == {**_expected_settings(MLVICX), "proj_hidden": 16, "proj_out": 16}


# ----------------------------------------------------------------------------- autocast


def _instances(b: int = 48, n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tv = torch.randn(b, n, n, generator=g)
    mask = (torch.rand(b, n, 1, n, 1, generator=g) < 0.4) * (torch.rand(b, 1, n, 1, n, generator=g) < 0.4)
    return tv, torch.randn(b, n, n, n, n, generator=g) * mask


@pytest.mark.parametrize("solver", [solve_qap, solve_qap_loop])
def test_solver_under_bf16_autocast_gives_the_float32_answer(solver):
    tv, te = _instances()
    ref = solver(tv, te)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = solver(tv, te)
    assert got.dtype == torch.float32
    assert torch.equal(got, ref)


class RecordingSolver:
    """The real solver, recording the dtypes it is handed and whether autocast is on inside it."""

    def __init__(self):
        self.calls: list[tuple[torch.dtype, torch.dtype | None, bool]] = []

    def __call__(self, theta_v, theta_e, cfg=SolverConfig()):
        self.calls.append((theta_v.dtype, None if theta_e is None else theta_e.dtype, torch.is_autocast_enabled("cpu")))
        return solve_qap(theta_v, theta_e, cfg)


def test_imle_forward_and_backward_run_in_float32_under_autocast():
    tv, te = _instances(b=6, n=6, seed=1)
    target = torch.eye(6).expand(6, 6, 6)
    for amp in (False, True):
        rec = RecordingSolver()
        theta_v, theta_e = tv.clone().requires_grad_(True), te.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            # low-precision scores, as an autocast forward hands them over
            tvin, tein = (theta_v.bfloat16(), theta_e.bfloat16()) if amp else (theta_v, theta_e)
            x = imle_match(tvin, tein, rec, lam=5.0)
            hamming(x, target).sum().backward()  # backward inside the autocast region too
        assert len(rec.calls) == 2  # forward solve + IMLE's perturbed solve in backward
        assert all(c == (torch.float32, torch.float32, False) for c in rec.calls), rec.calls
        assert x.dtype == torch.float32
        assert torch.equal(x, solve_qap(tvin.float(), tein.float()))  # the float32 answer
        assert theta_v.grad.dtype == theta_e.grad.dtype == torch.float32
        assert torch.isfinite(theta_v.grad).all() and theta_v.grad.abs().sum() > 0


def test_graph_matching_step_under_cpu_autocast_solves_in_float32(monkeypatch):
    torch.manual_seed(0)
    enc, _ = create_encoder("resnet18")
    obj = OBJECTIVES.get("graph-matching")(enc, graph_size=8)
    rec = RecordingSolver()
    monkeypatch.setitem(gm_mod.SOLVERS, "batched", rec)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = obj(_batch())
        loss.backward()
    assert len(rec.calls) == 2
    assert all(c == (torch.float32, torch.float32, False) for c in rec.calls), rec.calls
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in obj.projector.parameters())
