"""VICReg term vs pytorch-metric-learning's VICRegLoss, and the collapse sanity values."""

from __future__ import annotations

import pytest
import torch

from lvmbench.losses.vicreg import VICRegLoss, vicreg_terms

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")


@pytest.mark.parametrize("n,d", [(8, 16), (64, 256), (32, 1024)])
def test_matches_pml(n: int, d: int) -> None:
    ref = pml_losses.VICRegLoss(invariance_lambda=25, variance_mu=25, covariance_v=1, eps=1e-4)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.7
        z2 = z1 + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
        ours = vicreg_terms(z1, z2).total
        theirs = ref(z1, ref_emb=z2)
        assert abs(float(ours) - float(theirs)) <= 1e-12 * max(1.0, abs(float(theirs)))


def test_coefficients_scale_terms() -> None:
    z1, z2 = torch.randn(16, 8, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    base = vicreg_terms(z1, z2, 1.0, 1.0, 1.0)
    scaled = vicreg_terms(z1, z2, 2.0, 3.0, 5.0)
    torch.testing.assert_close(scaled.invariance, 2 * base.invariance)
    torch.testing.assert_close(scaled.variance, 3 * base.variance)
    torch.testing.assert_close(scaled.covariance, 5 * base.covariance)
    torch.testing.assert_close(scaled.total, scaled.invariance + scaled.variance + scaled.covariance)


def test_collapse_values() -> None:
    """Constant Z: variance term μ(γ − √ε) = 25 × 0.99 = 24.75, invariance and covariance 0."""
    z = torch.full((32, 64), 0.3, dtype=torch.float64)
    t = vicreg_terms(z, z.clone())
    assert abs(float(t.variance) - 24.75) < 1e-12
    assert float(t.invariance) == 0.0 and abs(float(t.covariance)) < 1e-24
    # unit-variance, decorrelated views that agree: variance term 0
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4096, 4, generator=g, dtype=torch.float64) * 3
    assert float(vicreg_terms(w, w).variance) == 0.0


def test_fp16_and_errors() -> None:
    z1, z2 = torch.randn(16, 32).half(), torch.randn(16, 32).half()
    out = VICRegLoss()(z1, z2)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    with pytest.raises(ValueError):
        vicreg_terms(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError):
        vicreg_terms(torch.randn(4, 4), torch.randn(4, 5))
