"""NT-Xent (SimCLR) against a brute-force loop over anchors and against pytorch-metric-learning."""

from __future__ import annotations

import math

import pytest
import torch

from lvmbench.losses.ntxent import nt_xent


def brute_force(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = torch.cat([z1, z2]).double()
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = i + n if i < n else i - n
        sims = [float(z[i] @ z[k] / (z[i].norm() * z[k].norm())) / t for k in range(n2)]
        denom = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -(sims[j] - math.log(denom))
    return total / n2


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (8, 16, 0.2), (16, 32, 0.07)])
def test_matches_brute_force(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    loss, acc = nt_xent(z1, z2, t)
    assert abs(float(loss) - brute_force(z1, z2, t)) < 1e-9
    assert 0.0 <= float(acc) <= 1.0


def test_matches_pytorch_metric_learning() -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(12, 20, generator=g, dtype=torch.float64), torch.randn(12, 20, generator=g, dtype=torch.float64)
    ref = losses.NTXentLoss(temperature=0.3)(torch.cat([z1, z2]), torch.arange(12).repeat(2))
    assert abs(float(nt_xent(z1, z2, 0.3)[0]) - float(ref)) < 1e-9


def test_identical_views_far_apart_give_near_zero_loss_and_full_accuracy() -> None:
    z = torch.eye(6, dtype=torch.float64) * 10
    loss, acc = nt_xent(z, z.clone(), 0.05)
    assert float(loss) < 1e-6 and float(acc) == 1.0


def test_bad_shapes_and_temperature_raise() -> None:
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), 0.0)
