"""Tversky projection/similarity vs a brute-force per-feature loop of the paper's equations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from lvmbench.heads import HEADS
from lvmbench.heads import tversky as tv
from lvmbench.heads.tversky import DIFFERENCES, INTERSECTIONS, TverskyProjection, TverskySimilarity


def _psi(x: float, y: float, red: str, tau: float) -> float:
    if red == "product":
        return x * y
    if red == "min":
        return min(x, y)
    if red == "max":
        return max(x, y)
    if red == "mean":
        return (x + y) / 2
    if red == "gmean":
        return math.sqrt(x * y)
    wx, wy = math.exp(-x / tau), math.exp(-y / tau)  # softmin weights
    return (wx * x + wy * y) / (wx + wy)


def brute_similarity(a: list[float], b: list[float], inter: str, diff: str, theta: float, alpha: float, beta: float, model: str, tau: float = 1.0, c: float = 1.0) -> float:
    """One pair, one feature at a time, straight from §1.1 (a, b = the scores a·f_k, b·f_k)."""
    f_int = f_ab = f_ba = 0.0
    for ak, bk in zip(a, b):
        if ak > 0 and bk > 0:
            f_int += _psi(ak, bk, inter, tau)
        if diff == "ignorematch":
            f_ab += ak if (ak > 0 and bk <= 0) else 0.0
            f_ba += bk if (bk > 0 and ak <= 0) else 0.0
        else:
            f_ab += (ak - bk) if (ak > 0 and bk > 0 and ak > bk) else 0.0
            f_ba += (bk - ak) if (ak > 0 and bk > 0 and bk > ak) else 0.0
    if model == "contrast":
        return theta * f_int - alpha * f_ab - beta * f_ba
    return f_int / (f_int + alpha * f_ab + beta * f_ba + c)


def _sim_module(d: int, k: int, inter: str, diff: str, model: str, seed: int = 0) -> TverskySimilarity:
    torch.manual_seed(seed)
    m = TverskySimilarity(d, k, similarity_model=model, intersection_reduction=inter, difference_reduction=diff, softmin_temperature=0.7).double()
    with torch.no_grad():  # mixed-sign features so that every membership case occurs
        m.features.normal_()
        m.theta.fill_(1.3)
        m.alpha.fill_(0.8)
        m.beta.fill_(0.3)
    return m


@pytest.mark.parametrize("model", ["contrast", "ratio"])
@pytest.mark.parametrize("inter,diff", list(itertools.product(INTERSECTIONS, DIFFERENCES)))
def test_matches_brute_force(inter: str, diff: str, model: str) -> None:
    m = _sim_module(6, 9, inter, diff, model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64)
    a, b = (x @ m.features.T).tolist(), (y @ m.features.T).tolist()
    kw = dict(theta=1.3, alpha=0.8, beta=0.3, model=model, tau=0.7)
    want = torch.tensor([[brute_similarity(a[i], b[j], inter, diff, **kw) for j in range(4)] for i in range(5)], dtype=torch.float64)
    got = m(x, y).detach()
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    # paired API: row i against row i, no (n, m) matrix
    want_p = torch.tensor([brute_similarity(a[i], b[i], inter, diff, **kw) for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(m.paired(x[:4], y).detach(), want_p, atol=1e-10, rtol=0)


def test_chunked_path_matches(monkeypatch) -> None:
    m = _sim_module(6, 9, "min", "substractmatch", "contrast")
    x = torch.randn(13, 6, dtype=torch.float64)
    y = torch.randn(7, 6, dtype=torch.float64)
    whole = m(x, y)
    monkeypatch.setattr(tv, "_CHUNK_ELEMENTS", 9 * 7 * 2)  # two rows per chunk
    torch.testing.assert_close(m(x, y), whole, atol=1e-12, rtol=0)


def test_projection_is_similarity_to_prototypes() -> None:
    torch.manual_seed(0)
    head = TverskyProjection(6, 3, fbank_size=8, input_norm="none").double()
    with torch.no_grad():
        head.features.normal_()
        head.prototypes.normal_()
    x = torch.randn(5, 6, dtype=torch.float64)
    a, p = (x @ head.features.T).tolist(), (head.prototypes @ head.features.T).tolist()
    want = torch.tensor([[brute_similarity(a[i], p[c], "product", "ignorematch", 1.0, 0.5, 0.5, "contrast") for c in range(3)] for i in range(5)], dtype=torch.float64)
    torch.testing.assert_close(head(x).detach(), want, atol=1e-10, rtol=0)
    # 3-D input (B, T, d) works as a token head
    assert head(x.reshape(1, 5, 6)).shape == (1, 5, 3)


@pytest.mark.parametrize("diff", DIFFERENCES)
@pytest.mark.parametrize("inter", INTERSECTIONS)
def test_symmetric_iff_alpha_equals_beta(inter: str, diff: str) -> None:
    m = _sim_module(5, 8, inter, diff, "contrast")
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        m.beta.copy_(m.alpha)
    torch.testing.assert_close(m(x, y), m(y, x).T, atol=1e-12, rtol=0)
    with torch.no_grad():
        m.beta.fill_(0.1)
    assert (m(x, y) - m(y, x).T).abs().max() > 1e-3


def test_all_active_contrast_product_is_bilinear() -> None:
    """Non-negative inputs, uniform(0,1) features and prototypes: every feature is active and the
    head reduces to θ xᵀΩᵀΩπ exactly (reference §1.5) -- why the head standardises its input."""
    torch.manual_seed(0)
    head = TverskyProjection(16, 4, fbank_size=12, input_norm="none").double()
    x = torch.rand(10, 16, dtype=torch.float64)
    bilinear = head.theta * (x @ head.features.T) @ (head.features @ head.prototypes.T)
    torch.testing.assert_close(head(x), bilinear, atol=1e-9, rtol=1e-12)
    d = head.diagnostics(x)
    assert d["active_fraction_inputs"] == 1.0 and d["active_fraction_prototypes"] == 1.0


def test_input_norm_activates_about_half_the_features() -> None:
    torch.manual_seed(0)
    head = TverskyProjection(64, 4, fbank_size=32)  # default: layernorm
    x = torch.relu(torch.randn(256, 64))  # post-ReLU-like pooled features
    frac = head.diagnostics(x)["active_fraction_inputs"]
    assert 0.2 < frac < 0.8
    raw = TverskyProjection(64, 4, fbank_size=32, input_norm="none").diagnostics(x)["active_fraction_inputs"]
    assert raw == 1.0


def test_ignorematch_zero_for_equal_sets() -> None:
    m = _sim_module(5, 8, "product", "ignorematch", "contrast")
    x = torch.randn(4, 5, dtype=torch.float64)
    a = m.scores(x)
    _, a_b, b_a = tv.pairwise_measures(a, 2 * a, "product", "ignorematch")
    assert torch.all(a_b.diagonal() == 0) and torch.all(b_a.diagonal() == 0)


@pytest.mark.parametrize("inter", INTERSECTIONS)
def test_ratio_in_unit_interval(inter: str) -> None:
    m = _sim_module(5, 8, inter, "ignorematch", "ratio")
    s = m(torch.randn(20, 5, dtype=torch.float64), torch.randn(15, 5, dtype=torch.float64))
    assert torch.all(s >= 0) and torch.all(s < 1)


@pytest.mark.parametrize("inter,diff", [("product", "ignorematch"), ("gmean", "substractmatch"), ("softmin", "ignorematch"), ("min", "substractmatch")])
def test_gradcheck(inter: str, diff: str) -> None:
    m = _sim_module(4, 6, inter, diff, "contrast")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    y = torch.randn(2, 4, generator=g, dtype=torch.float64)
    # keep every score away from 0 so that finite differences never cross a membership boundary
    assert (x @ m.features.T).abs().min() > 1e-3 and (y @ m.features.T).abs().min() > 1e-3
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: m(a, b), (x, y), eps=1e-7, atol=1e-6)


def test_gmean_no_nan_gradient_at_inactive_features() -> None:
    m = _sim_module(4, 6, "gmean", "ignorematch", "contrast")
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    m(x, torch.randn(5, 4, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.features.grad).all()


XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([0, 1, 1, 0])


def _fit(model: nn.Module, steps: int = 300, lr: float = 0.05) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(XOR_X), XOR_Y).backward()
        opt.step()
    with torch.no_grad():
        return float((model(XOR_X).argmax(1) == XOR_Y).float().mean())


def test_xor_learnable_by_one_tversky_layer_not_by_linear(one_thread) -> None:  # 300 steps of a 4-point problem
    solved = []
    for seed in range(6):
        torch.manual_seed(seed)
        acc = _fit(TverskyProjection(2, 2, fbank_size=4, input_norm="none"))
        solved.append(acc == 1.0)
        if acc == 1.0:
            break
    assert any(solved), "no seed of a one-layer Tversky net solved XOR"
    torch.manual_seed(0)
    assert _fit(nn.Linear(2, 2)) <= 0.75  # XOR is not linearly separable: at most 3 of 4 points


def test_registered_head_and_options() -> None:
    head = HEADS.get("tversky")(32, 5, fbank_size=16, intersection_reduction="mean", input_norm="batchnorm", learnable_scale=True, logit_scale=0.01)
    assert isinstance(head, TverskyProjection)
    out = head(torch.randn(8, 32))
    assert out.shape == (8, 5) and torch.isfinite(out).all()
    assert "log_scale" in dict(head.named_parameters())
    d = head.diagnostics(torch.randn(8, 32))
    assert set(d) >= {"active_fraction_inputs", "theta", "alpha", "beta"}
    with pytest.raises(ValueError):
        HEADS.get("tversky")(32, 5, intersection_reduction="median")
