"""MLVICX objective: every parameter reaches the optimiser (the reference code's bug), shapes, loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lvmbench.encoders.adapters import TorchvisionResNet
from lvmbench.losses.vicreg import vicreg_terms
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch
from lvmbench.pretrain.objectives.mlvicx import MLVICX, MultiLevelFuse

SMALL = dict(proj_hidden=32, proj_out=32, local_channels=8, local_size=8, local_pool=2, local_hidden=32, local_out=32)


def _batch(n: int = 4, size: int = 32, seed: int = 0) -> PretrainBatch:
    g = torch.Generator().manual_seed(seed)
    v1 = torch.randn(n, 3, size, size, generator=g)
    v2 = v1 + 0.1 * torch.randn(n, 3, size, size, generator=g)
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(n, 1)
    return PretrainBatch(v1, v2, box, box.clone())


def _objective(**kw) -> MLVICX:
    torch.manual_seed(0)
    return OBJECTIVES.get("mlvicx")(TorchvisionResNet("resnet18"), **{**SMALL, **kw})


def test_registered_and_stage_channels() -> None:
    assert "mlvicx" in OBJECTIVES.names()
    obj = _objective()
    assert [c.in_channels for c in obj.fuse.convs] == [64, 64, 128, 256, 512]
    r50 = MLVICX(TorchvisionResNet("resnet50"), **SMALL)
    # block OUTPUT channels (not conv2's 64/128/256/512 the reference code read)
    assert [c.in_channels for c in r50.fuse.convs] == [64, 256, 512, 1024, 2048]
    assert r50.global_projector[0].in_features == 2048


def test_optimizer_sees_every_parameter_and_level_convs_train() -> None:
    """The regression test for the reference bug: its 1×1 convs were created in the first forward,
    after the optimiser, and never trained."""
    obj = _objective()
    before = {id(p) for p in obj.parameters()}
    opt = torch.optim.SGD(obj.parameters(), lr=0.1)
    opt_params = {id(p) for g in opt.param_groups for p in g["params"]}
    conv_before = [c.weight.detach().clone() for c in obj.fuse.convs]
    loss, logs = obj(_batch())
    assert {id(p) for p in obj.parameters()} == before == opt_params  # nothing created lazily
    assert all(id(c.weight) in opt_params for c in obj.fuse.convs)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for w0, c in zip(conv_before, obj.fuse.convs):
        assert not torch.equal(w0, c.weight), "a multi-level 1x1 conv did not change after one step"
    assert torch.isfinite(loss) and {"global_total", "local_total", "global_variance", "local_covariance"} <= set(logs)


def test_freeze_level_convs_reproduces_reference() -> None:
    obj = _objective(freeze_level_convs=True)
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.1)
    conv_before = [c.weight.detach().clone() for c in obj.fuse.convs]
    proj_before = obj.local_projector[0].weight.detach().clone()
    loss, _ = obj(_batch())
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.equal(w0, c.weight) for w0, c in zip(conv_before, obj.fuse.convs))
    assert not torch.equal(proj_before, obj.local_projector[0].weight)


def test_loss_is_global_plus_lambda_local() -> None:
    b = _batch()
    obj = _objective(lambda_local=0.0)
    obj.eval()  # BatchNorm with running stats: the same forward twice gives the same numbers
    with torch.no_grad():
        g1, l1 = obj.project(b.view1)
        g2, l2 = obj.project(b.view2)
        lg, ll = vicreg_terms(g1, g2).total, vicreg_terms(l1, l2).total
        for lam in (0.0, 1.0, 2.5):
            obj.lambda_local = lam
            loss, logs = obj(b)
            assert abs(float(loss) - float(lg + lam * ll)) < 1e-4 * max(1.0, float(loss))
            assert abs(logs["local_total"] - float(ll)) < 1e-4 * max(1.0, float(ll))


def test_fuse_order_trick_is_exact() -> None:
    """Convolving before or after the bilinear resize gives the same map (both are linear and the
    bilinear weights sum to one), so the cheaper order is used per level."""
    torch.manual_seed(0)
    fuse = MultiLevelFuse([3, 5], out_channels=4, out_size=6).double()
    maps = [torch.randn(2, 3, 3, 3, dtype=torch.float64), torch.randn(2, 5, 12, 12, dtype=torch.float64)]
    ref = sum(conv(F.interpolate(m, size=(6, 6), mode="bilinear", align_corners=False)) for m, conv in zip(maps, fuse.convs))
    torch.testing.assert_close(fuse(maps), ref, atol=1e-12, rtol=0)
    with pytest.raises(ValueError):
        fuse(maps[:1])


def test_short_run_stays_finite() -> None:
    obj = _objective()
    opt = torch.optim.SGD(obj.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for step in range(6):
        loss, _ = obj(_batch(n=6, seed=step % 2))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(obj.parameters(), 5.0)
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[2:]) < losses[0]
