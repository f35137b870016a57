"""Typed settings at run time: schedules against torch's own schedulers, normalisation, selection
on validation (empty split refused, NaN scores never win), non-finite losses stop the unit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lvmbench.data.transforms import IMAGENET, input_norm, normalize_batch
from lvmbench.encoders.base import InputSpec
from lvmbench.errors import UserError
from lvmbench.protocols.schedule import lr_factor, make_scheduler
from lvmbench.protocols.selection import BestOnValidation, FiniteLoss, TrainingDiverged, require_validation
from lvmbench.protocols.settings import MeanStd, Schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _rates(sched_factory, steps: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = sched_factory(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("spe", [1, 3, 7])
def test_step_schedule_matches_torch_multisteplr(spe):
    epochs = 6
    ours = _rates(lambda o: make_scheduler(o, Schedule(kind="step", milestones=[2, 4], gamma=0.3), epochs, spe), epochs * spe)
    ref = _rates(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2 * spe, 4 * spe], gamma=0.3), epochs * spe)
    assert np.allclose(ours, ref, rtol=1e-12)


def test_cosine_schedule_matches_torch_cosineannealing():
    epochs, spe = 5, 4
    total = epochs * spe
    ours = _rates(lambda o: make_scheduler(o, Schedule(kind="cosine", min_lr_factor=0.1), epochs, spe), total)
    ref = _rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.01), total)
    assert np.allclose(ours, ref, rtol=1e-9)


def test_linear_warmup_matches_torch_linearlr_then_holds():
    epochs, spe = 4, 5
    warm = Schedule(kind="constant", warmup_epochs=2, warmup_start_factor=0.1)
    ours = _rates(lambda o: make_scheduler(o, warm, epochs, spe), epochs * spe)
    ref = _rates(lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=2 * spe), epochs * spe)
    assert np.allclose(ours, ref, rtol=1e-9)
    assert lr_factor(Schedule(), 123, 10, 7) == 1.0


def test_normalisation_choices():
    spec = InputSpec(mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    enc = normalize_batch(x, input_norm("encoder", "raw255", spec))
    assert torch.allclose(enc[0, :, 0, 0], torch.tensor([1.8, 1.6, 1.4]))
    assert torch.allclose(normalize_batch(x, input_norm("imagenet", "raw255", spec)), normalize_batch(x, IMAGENET))
    assert normalize_batch(x, input_norm("raw255", "imagenet", spec)).max() == 255
    assert normalize_batch(x, input_norm("unit", "imagenet", spec)).max() == 1
    # no setting: the task's intensity decides (imagenet = the encoder's own statistics, as before)
    assert torch.equal(normalize_batch(x, input_norm(None, "imagenet", spec)), enc)
    explicit = normalize_batch(x, input_norm(MeanStd(mean=[127.5], std=[127.5], pixel_range="raw255"), "imagenet", spec))
    assert torch.allclose(explicit, torch.ones_like(explicit))
    gray = normalize_batch(x[:, :1], input_norm("encoder", "imagenet", spec))  # 1-channel input: first statistic
    assert gray.shape[1] == 1 and math.isclose(float(gray[0, 0, 0, 0]), 1.8, rel_tol=1e-6)


def test_selection_ignores_nan_and_prefers_the_earliest_best():
    sel = BestOnValidation()
    for epoch, score in enumerate([float("nan"), 0.4, 0.6, 0.6, float("nan")], start=1):
        sel.offer(score, lambda e=epoch: f"state{e}", {"epoch": epoch})
    state, info = sel.result("x")
    assert state == "state3" and info == {"epoch": 3} and not sel.flags


def test_selection_with_only_nan_keeps_the_last_state_and_flags_it():
    sel = BestOnValidation()
    for epoch in (1, 2):
        sel.offer(float("nan"), lambda e=epoch: f"state{e}", {"epoch": epoch})
    state, info = sel.result("x")
    assert state == "state2" and info["validation_undefined"] and sel.flags == ["validation-undefined"]


def test_empty_validation_split_is_refused_with_the_fix():
    from types import SimpleNamespace

    from lvmbench.tasks import get_task

    ctx = SimpleNamespace(task=get_task("kvasir_seg"), unit=SimpleNamespace(protocol="seg2d"))
    with pytest.raises(UserError, match="validation split, which is empty.*fix: give the split a validation part"):
        require_validation(ctx, [])
    require_validation(ctx, [object()])


def test_non_finite_loss_stops_with_one_line():
    guard = FiniteLoss("segmentation")
    guard.check(torch.tensor(1.0), 1)
    guard.end_epoch(1)
    with pytest.raises(TrainingDiverged, match="segmentation loss became NaN/inf in epoch 2.*fix: lower lr"):
        guard.check(torch.tensor(float("inf")), 2)


def test_prior_baseline_is_the_majority_class_share():
    from types import SimpleNamespace

    from lvmbench.protocols.classification_common import prior_baseline

    train = [SimpleNamespace(label=c) for c in [0, 0, 0, 1, 2]]
    test = [SimpleNamespace(label=c) for c in [0, 1, 1, 2, 0, 0, 1, 2]]
    acc = prior_baseline(train, test, 3, "accuracy")
    assert acc["value"] == pytest.approx(3 / 8)  # always class 0, the training majority
    assert prior_baseline(train, test, 3, "auc")["value"] == pytest.approx(0.5)


def test_random_ranking_recall_at_1_matches_a_simulation():
    from lvmbench.protocols.retrieval import random_ranking_recall1

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    groups = [f"p{i // 2}" for i in range(30)]
    hits = []
    for _ in range(4000):
        i = rng.integers(0, 30)
        gallery = [j for j in range(30) if groups[j] != groups[i]]
        if any(labels[j] == labels[i] for j in gallery):
            hits.append(labels[rng.choice(gallery)] == labels[i])
    assert random_ranking_recall1(labels, groups) == pytest.approx(np.mean(hits), abs=0.03)


def test_smoke_units_must_beat_their_baseline(tmp_path, monkeypatch, capsys):
    from builders import make_record, write_records
    from cli_helpers import cli, the_line

    from lvmbench.runner import Summary, below_baseline

    per_case = [{"case": f"c{i}", "group": f"c{i}", "split": "test", "score": 1.0} for i in range(4)]
    good = make_record(per_case, "accuracy", seed=0, primary=0.9)
    good.extra["baseline"] = {"metric": "accuracy", "value": 0.25, "predictor": "training class prior (majority class)"}
    chance = make_record(per_case, "accuracy", seed=1, primary=0.27)
    chance.extra["baseline"] = {"metric": "accuracy", "value": 0.25, "predictor": "training class prior (majority class)"}
    silent = make_record(per_case, "accuracy", seed=2, primary=0.9)  # states no baseline
    write_records(tmp_path, [good, chance, silent])
    lines = below_baseline(tmp_path, [good.unit, chance.unit, silent.unit])
    assert len(lines) == 2 and "accuracy 0.270 vs training class prior (majority class) 0.250" in lines[0] and "no baseline recorded" in lines[1]

    import lvmbench.launch.dispatch as launch

    monkeypatch.setattr(launch, "run", lambda req, log=None: Summary(done=["a", "b"], below_baseline=lines))
    code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--suite", "smoke")
    assert code == 1 and "2 unit(s)" in the_line(err, "not above baseline")
