"""Multi-similarity loss + miner vs pytorch-metric-learning, the P×K sampler, the triplet loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lvmbench.data.samplers import PKBatchSampler
from lvmbench.losses import metric_objective
from lvmbench.losses.multi_similarity import MS_PRESETS, cosine_matrix, mined_pairs, ms_mine, ms_params, multi_similarity_loss
from lvmbench.losses.triplet import SymmetricTripletLoss, batch_triplets, symmetric_triplet_loss
from lvmbench.spec import RunOptions

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")


def pml_ms(x: torch.Tensor, y: torch.Tensor, preset: str) -> torch.Tensor:
    p = MS_PRESETS[preset]
    miner = pml_miners.MultiSimilarityMiner(epsilon=p.epsilon)
    loss = pml_losses.MultiSimilarityLoss(alpha=p.alpha, beta=p.beta, base=p.lam)
    return loss(x, y, miner(x, y))


def pk_batch(p: int, k: int, d: int, seed: int, clustered: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(p).repeat_interleave(k)
    x = torch.randn(p * k, d, generator=g, dtype=torch.float64)
    if clustered:  # tight, well separated classes: most anchors have no hard pair at all
        centres = torch.randn(p, d, generator=g, dtype=torch.float64) * 10
        x = centres[y] + 0.05 * x
    return x, y


@pytest.mark.parametrize("preset", sorted(MS_PRESETS))
@pytest.mark.parametrize("p,k", [(8, 4), (16, 5)])
@pytest.mark.parametrize("clustered", [False, True])
def test_matches_pml(preset: str, p: int, k: int, clustered: bool) -> None:
    for seed in range(10):
        x, y = pk_batch(p, k, 16, seed, clustered)
        ours = multi_similarity_loss(x, y, ms_params(preset))
        ref = pml_ms(x, y, preset)
        assert ours.dtype == torch.float64
        assert abs(float(ours) - float(ref)) <= 1e-10, (seed, float(ours), float(ref))


def test_miner_matches_pml_pairs() -> None:
    for seed in range(10):
        x, y = pk_batch(8, 4, 16, seed)
        hp, hn = ms_mine(cosine_matrix(x), y, 0.1)
        a1, p, a2, n = mined_pairs(hp, hn)
        r = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y)
        assert set(zip(a1.tolist(), p.tolist())) == set(zip(r[0].tolist(), r[1].tolist()))
        assert set(zip(a2.tolist(), n.tolist())) == set(zip(r[2].tolist(), r[3].tolist()))
        # label-consistent, self never a positive (PML issue #723)
        assert torch.all(y[a1] == y[p]) and torch.all(a1 != p) and torch.all(y[a2] != y[n])


def test_larger_epsilon_mines_more() -> None:
    x, y = pk_batch(8, 4, 16, 0)
    s = cosine_matrix(x)
    small = [int(m.sum()) for m in ms_mine(s, y, 0.0)]
    large = [int(m.sum()) for m in ms_mine(s, y, 0.3)]
    assert large[0] >= small[0] and large[1] >= small[1] and sum(large) > sum(small)


def test_gradient_gives_ms_pair_weights() -> None:
    """d loss / d S_ij equals the paper's pair weights w⁺ (negated) and w⁻ over the batch size."""
    x, y = pk_batch(4, 3, 8, 1)
    prm = ms_params("pml")
    s = cosine_matrix(x)
    hp, hn = ms_mine(s, y, prm.epsilon)
    s = s.clone().requires_grad_(True)
    pos = (-prm.alpha * (s - prm.lam)).masked_fill(~hp, float("-inf"))
    neg = (prm.beta * (s - prm.lam)).masked_fill(~hn, float("-inf"))
    zero = torch.zeros(len(s), 1, dtype=s.dtype)
    loss = (torch.logsumexp(torch.cat([zero, pos], 1), 1) / prm.alpha + torch.logsumexp(torch.cat([zero, neg], 1), 1) / prm.beta).mean()
    loss.backward()
    m = len(s)
    sd = s.detach()
    for i in range(m):
        ps, ns = hp[i].nonzero().flatten(), hn[i].nonzero().flatten()
        for j in ps:
            w = 1 / (torch.exp(prm.alpha * (sd[i, j] - prm.lam)) + torch.exp(-prm.alpha * (sd[i, ps] - sd[i, j])).sum())
            assert abs(float(s.grad[i, j] + w / m)) < 1e-12
        for j in ns:
            w = torch.exp(prm.beta * (sd[i, j] - prm.lam)) / (1 + torch.exp(prm.beta * (sd[i, ns] - prm.lam)).sum())
            assert abs(float(s.grad[i, j] - w / m)) < 1e-12


def test_anchor_without_positive_contributes_zero() -> None:
    x, y = pk_batch(4, 3, 8, 2)
    y = torch.cat([y, torch.tensor([99])])  # a lone class
    x = torch.cat([x, torch.randn(1, 8, dtype=torch.float64)])
    hp, hn = ms_mine(cosine_matrix(x), y, 0.1)
    assert not hp[-1].any() and not hn[-1].any()
    loss = multi_similarity_loss(x, y)
    assert torch.isfinite(loss)
    assert abs(float(loss) - float(pml_ms(x, y, "pml"))) <= 1e-10


def test_empty_mining_and_single_class() -> None:
    x, y = pk_batch(4, 3, 8, 3, clustered=True)
    hp, hn = ms_mine(cosine_matrix(x), y, 0.1)
    assert int(hp.sum()) == 0 and int(hn.sum()) == 0  # mined sets empty together
    x.requires_grad_(True)
    loss = multi_similarity_loss(x, y)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(x.grad == 0)
    same = multi_similarity_loss(torch.randn(6, 8, dtype=torch.float64), torch.zeros(6, dtype=torch.long))
    assert float(same) == 0.0


def test_fp16_inputs_do_not_overflow() -> None:
    x, y = pk_batch(8, 4, 16, 4)
    x16 = x.half()
    # the naive form overflows in half precision: exp(50 * (0.9 - 0.5)) = e^20 > 65504
    assert torch.isinf(torch.exp(torch.tensor(50 * 0.4, dtype=torch.float16)))
    x16 = F.normalize(x16.float(), dim=1).half() * 3
    x16.requires_grad_(True)
    loss = multi_similarity_loss(x16, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x16.grad).all()
    assert abs(float(loss) - float(multi_similarity_loss(x16.detach().double(), y))) < 1e-3


def test_presets_and_objective_factory() -> None:
    assert (MS_PRESETS["paper"].beta, MS_PRESETS["paper"].lam) == (50.0, 1.0)
    assert (MS_PRESETS["official"].beta, MS_PRESETS["official"].lam) == (40.0, 0.5)
    loss, rec = metric_objective("ms", {"ms_preset": "official", "ms_epsilon": 0.2})
    assert rec == {"ms_preset": "official", "ms_alpha": 2.0, "ms_beta": 40.0, "ms_lam": 0.5, "ms_epsilon": 0.2}
    _, rec = metric_objective("triplet", {})
    assert rec == {"triplet_margin": 0.1}
    from lvmbench.errors import UserError

    with pytest.raises(UserError):
        metric_objective("arcface", {})


# -- symmetric triplet loss (SIRL Eq. 2) ---------------------------------------------------------


def test_symmetric_triplet_equals_two_torch_triplet_losses() -> None:
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(50, 6, generator=g, dtype=torch.float64) for _ in range(3))
    ref = F.triplet_margin_loss(a, p, n, margin=0.1, eps=0.0) + F.triplet_margin_loss(p, a, n, margin=0.1, eps=0.0)
    assert abs(float(symmetric_triplet_loss(a, p, n, 0.1)) - float(ref)) < 1e-12


def test_batch_triplets_are_label_consistent() -> None:
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    i, j, k = batch_triplets(y)
    assert torch.all(y[i] == y[j]) and torch.all(y[i] != y[k]) and torch.all(i < j)
    # pairs (0,1): 4 odd items; (2,3), (2,4), (3,4): 3 each
    assert len(i) == 4 + 3 * 3
    e = batch_triplets(torch.tensor([0, 1, 2]))
    assert all(len(t) == 0 for t in e)
    loss = SymmetricTripletLoss()(torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 2]))
    assert float(loss) == 0.0


# -- P×K sampler ---------------------------------------------------------------------------------


def test_pk_sampler_balanced_and_deterministic() -> None:
    labels = np.array([0] * 20 + [1] * 9 + [2] * 2 + [3] * 13)
    s = PKBatchSampler(labels, p=3, k=4, seed=7)
    batches = list(s)
    assert len(batches) > 0
    for b in batches:
        assert len(b) == 12
        cls, cnt = np.unique(labels[b], return_counts=True)
        assert len(cls) == 3 and np.all(cnt == 4)
    # class 2 (2 images) is up-sampled with replacement: its groups repeat an index
    assert any(len(set(b)) < len(b) for b in batches if 2 in labels[b])
    again = PKBatchSampler(labels, p=3, k=4, seed=7)
    assert list(again) == batches
    assert list(again) != batches  # the next epoch differs
    other = PKBatchSampler(labels, p=3, k=4, seed=8)
    assert list(other) != batches
    s.set_epoch(0)
    assert len(s) == len(batches) and list(s) == batches
    # fewer classes than P: every batch has all classes
    assert all(len(b) == 4 * 4 for b in PKBatchSampler(labels, p=10, k=4, seed=0))


# -- fine-tuning with a metric objective ----------------------------------------------------------


@pytest.mark.parametrize("objective", ["ms", "triplet"])
def test_finetune_with_metric_objective(objective: str, synth_root, tmp_path) -> None:
    import copy

    from lvmbench.data.task_data import load_task_data
    from lvmbench.encoders import create_encoder
    from lvmbench.protocols.base import PROTOCOLS, RunContext
    from lvmbench.spec import RunUnit
    from lvmbench.tasks import get_task

    task = get_task("brain_tumor_finetune").for_suite("smoke")
    enc, ident = create_encoder("resnet18", None, seed=0)
    ctx = RunContext(
        unit=RunUnit(suite="smoke", task_id=task.id, protocol="finetune", encoder="resnet18", weights_sha256=ident.weights_sha256),
        task=task,
        data=load_task_data(task, synth_root),
        encoder_identity=ident,
        make_encoder=lambda: copy.deepcopy(enc),
        settings=task.settings("finetune").model_copy(update={"objective": objective, "epochs": 1, "pk": (4, 4), "embedding_dim": 16, "knn_k": 5}),
        device=torch.device("cpu"),
        cache_dir=tmp_path / "cache",
        run=RunOptions(progress=False, workers=0))
    out = PROTOCOLS.get("finetune")().run(ctx)
    hp = out.hparams
    assert ctx.settings.objective == objective and (hp["P"], hp["K"]) == (4, 4)
    assert ("ms_beta" in hp) == (objective == "ms") and ("triplet_margin" in hp) == (objective == "triplet")
    assert 0.0 <= out.metrics["accuracy"] <= 1.0 and len(out.per_case) == len(ctx.data.split.test)
    probs = np.array([c["prob"] for c in out.per_case])
    assert probs.shape[1] == task.num_classes and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert all(np.isfinite(h["loss"]) for h in out.extra["val_history"])
