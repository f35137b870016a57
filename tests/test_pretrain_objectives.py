"""The baseline objectives beside graph matching (SimCLR, VICReg): every parameter trains, the
monitors get their outputs, and a step through the trainer writes an evaluable encoder."""

from __future__ import annotations

import pytest
import torch

from lvmbench.encoders import create_encoder
from lvmbench.losses.ntxent import nt_xent
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(n: int = 8, size: int = 32) -> PretrainBatch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(n, 1)
    return PretrainBatch(x, x + 0.1 * torch.randn(x.shape, generator=g), box, box)


@pytest.mark.parametrize("name", ["simclr", "vicreg", "mlvicx", "graph-matching"])
def test_every_parameter_gets_a_gradient_and_outputs_are_recorded(name):
    enc, _ = create_encoder("resnet18", seed=0)
    opts = {"proj_hidden": 64, "proj_out": 64} if name == "vicreg" else {"proj_hidden": 64, "proj_out": 64, "local_hidden": 64, "local_out": 64} if name == "mlvicx" else {}
    obj = OBJECTIVES.get(name)(enc, **opts).train()
    b = batch(16)
    loss, logs = obj(b)
    loss.backward()
    missing = [n for n, p in obj.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert torch.isfinite(loss) and logs["loss"] == pytest.approx(float(loss.detach()))
    assert obj.outputs["embedding"].shape == (16, 512) and not obj.outputs["embedding"].requires_grad
    assert obj.outputs["projection"].shape[0] == 16


def test_simclr_loss_is_nt_xent_of_its_projections():
    enc, _ = create_encoder("resnet18", seed=0)
    obj = OBJECTIVES.get("simclr")(enc, temperature=0.3).eval()
    b = batch()
    loss, logs = obj(b)
    with torch.no_grad():
        _, p = enc.forward_pooled(torch.cat([b.view1, b.view2]))
        z = obj.projector(p)
    ref, acc = nt_xent(z[:8], z[8:], 0.3)
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5) and logs["contrastive_acc"] == pytest.approx(float(acc))


def test_graph_matching_logs_the_noise_free_agreement_on_monitor_steps():
    enc, _ = create_encoder("resnet18", seed=0)
    obj = OBJECTIVES.get("graph-matching")(enc).train()
    _, logs = obj(batch(16))
    assert "match_acc_clean" not in logs and {"match_acc", "vertex_top1", "vertex_gap"} <= set(logs)
    obj.diagnose = True
    _, logs = obj(batch(16))
    assert 0.0 <= logs["match_acc_clean"] <= 1.0 and 0.0 <= logs["graphs_exact_clean"] <= 1.0
