"""k-NN graphs, the GCN and the affinities against independent (dense / loop) computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lvmbench.pretrain.affinity import cell_positions, edge_affinity, global_affinity, local_affinity, vertex_affinity
from lvmbench.pretrain.gcn import GCN, knn_adjacency


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))


def test_knn_adjacency_matches_a_loop():
    torch.manual_seed(0)
    z = torch.randn(3, 9, 6)
    adj = knn_adjacency(z, k=3).numpy()
    for g in range(3):
        zz = z[g].double().numpy()
        ref = np.zeros((9, 9))
        for i in range(9):
            sims = sorted(((cos(zz[i], zz[j]), j) for j in range(9) if j != i), reverse=True)
            for _, j in sims[:3]:
                ref[i, j] = ref[j, i] = 1  # symmetric union of the directed k-NN relation
        assert np.array_equal(adj[g], ref)
    assert knn_adjacency(z[:, :1], 5).sum() == 0  # a single node has no neighbours


def test_gcn_equals_the_dense_kipf_welling_formula():
    torch.manual_seed(1)
    gcn = GCN(5, 7, 4)
    with torch.no_grad():
        gcn.bias1.normal_()
        gcn.bias2.normal_()
    z = torch.randn(2, 6, 5)
    adj = knn_adjacency(z, 2)
    out = gcn(z, adj).detach().double().numpy()
    w1, w2 = gcn.lin1.weight.detach().double().numpy(), gcn.lin2.weight.detach().double().numpy()
    b1, b2 = gcn.bias1.detach().double().numpy(), gcn.bias2.detach().double().numpy()
    for g in range(2):
        a = adj[g].double().numpy() + np.eye(6)
        deg = a.sum(axis=1)
        a_hat = np.array([[a[i, j] / math.sqrt(deg[i] * deg[j]) for j in range(6)] for i in range(6)])
        h = np.maximum(a_hat @ z[g].double().numpy() @ w1.T + b1, 0)
        ref = a_hat @ h @ w2.T + b2
        assert np.allclose(out[g], ref, atol=1e-5)


def test_cell_positions_follow_the_crop_box_and_flip():
    box = torch.tensor([[0.2, 0.1, 0.6, 0.5], [0.6, 0.1, 0.2, 0.5]])  # second: same crop, flipped
    pos = cell_positions(box, rows=2, cols=4)
    assert pos.shape == (2, 8, 2)
    xs = [0.2 + (c + 0.5) / 4 * 0.4 for c in range(4)]
    ys = [0.1 + (r + 0.5) / 2 * 0.4 for r in range(2)]
    assert torch.allclose(pos[0], torch.tensor([[x, y] for y in ys for x in xs]))
    assert torch.allclose(pos[1], torch.tensor([[x, y] for y in ys for x in xs[::-1]]))


def brute_local(ys, yt, bs, bt, gamma):
    """Loops over graphs, node pairs and cells; nearest cell by position / by L2 feature distance."""
    g, n, d, r, s = ys.shape
    out = np.zeros((g, n, n))

    def positions(box):
        x1, y1, x2, y2 = box
        return [(x1 + (c + 0.5) / s * (x2 - x1), y1 + (rr + 0.5) / r * (y2 - y1)) for rr in range(r) for c in range(s)]

    def one_way(fa, fb, pa, pb):
        loc, feat = [], []
        for p in range(len(fa)):
            dl = [(pa[p][0] - pb[q][0]) ** 2 + (pa[p][1] - pb[q][1]) ** 2 for q in range(len(fb))]
            df = [float(np.sum((fa[p] - fb[q]) ** 2)) for q in range(len(fb))]
            ql, qf = int(np.argmin(dl)), int(np.argmin(df))
            loc.append((dl[ql], cos(fa[p], fb[ql])))
            feat.append((df[qf], cos(fa[p], fb[qf])))
        pick = lambda pairs: np.mean([c for _, c in sorted(pairs, key=lambda t: t[0])[:gamma]])  # noqa: E731
        return 0.5 * (pick(loc) + pick(feat))

    for gg in range(g):
        for i in range(n):
            for a in range(n):
                fa = ys[gg, i].reshape(d, -1).T
                fb = yt[gg, a].reshape(d, -1).T
                pa, pb = positions(bs[gg, i]), positions(bt[gg, a])
                out[gg, i, a] = one_way(fa, fb, pa, pb) + one_way(fb, fa, pb, pa)
    return out


@pytest.mark.parametrize("gamma", [1, 3, 50])
def test_local_affinity_matches_brute_force(gamma):
    torch.manual_seed(2)
    g, n, d, r, s = 2, 3, 4, 2, 3  # non-square map: catches row/column mix-ups
    ys, yt = torch.randn(g, n, d, r, s), torch.randn(g, n, d, r, s)
    lo = torch.rand(g, n, 2) * 0.5
    bs = torch.cat([lo, lo + 0.3 + torch.rand(g, n, 2) * 0.2], dim=-1)
    bt = torch.cat([lo.flip(-1), lo.flip(-1) + 0.4], dim=-1)[..., [2, 1, 0, 3]]  # flipped t-views
    got = local_affinity(ys, yt, bs, bt, gamma).double().numpy()
    ref = brute_local(ys.double().numpy(), yt.double().numpy(), bs.double().numpy(), bt.double().numpy(), gamma)
    assert np.allclose(got, ref, atol=1e-5)


def test_edge_and_vertex_affinities_match_loops():
    torch.manual_seed(3)
    g, n, f = 2, 5, 4
    zs, zt = torch.randn(g, n, f), torch.randn(g, n, f)
    adj_s, adj_t = knn_adjacency(zs, 2), knn_adjacency(zt, 2)
    e = edge_affinity(zs, zt, adj_s, adj_t).double().numpy()
    loc = torch.rand(g, n, n)
    v = vertex_affinity(zs, zt, loc, alpha=0.8).double().numpy()
    a, b = zs.double().numpy(), zt.double().numpy()
    for gg in range(g):
        for i in range(n):
            for ai in range(n):
                ref_v = 0.8 * cos(a[gg, i], b[gg, ai]) + 0.2 * float(loc[gg, i, ai])
                assert abs(v[gg, i, ai] - ref_v) < 1e-5
                for j in range(n):
                    for bj in range(n):
                        is_edge = adj_s[gg, i, j] > 0 and adj_t[gg, ai, bj] > 0
                        ref = cos(a[gg, i] - a[gg, j], b[gg, ai] - b[gg, bj]) if is_edge else 0.0
                        assert abs(e[gg, i, ai, j, bj] - ref) < 1e-5
    assert torch.allclose(vertex_affinity(zs, zt, None), global_affinity(zs, zt))
