"""Training loops as the papers run them (issue 28 item 2): the last partial batch kept by default
(``drop_last``, a one-image last batch folded into the one before), augmentation off unless a task
turns it on (and inert keys resolved to off, so the recorded settings say what took effect), and the
per-epoch learning rate in a result's history is the one that epoch's steps used, checked against
torch's own schedulers."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import write_class_folders, write_kvasir
from torch import nn

from lvmbench.data.batches import ShuffledBatches, batch_bounds
from lvmbench.data.task_data import load_task_data
from lvmbench.encoders import create_encoder
from lvmbench.identity import spec_dict
from lvmbench.protocols.base import RunContext
from lvmbench.protocols.finetune import FineTune
from lvmbench.protocols.linear import train_heads
from lvmbench.protocols.seg2d import Seg2D
from lvmbench.protocols.settings import Schedule
from lvmbench.spec import RunOptions, RunUnit, TaskSpec
from lvmbench.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batches_keep_every_image_and_fold_a_single_one():
    # BreastMNIST: 546 training images at batch 128 -> 5 steps, all 546 seen (drop_last: 4 steps, 512)
    keep, drop = batch_bounds(546, 128), batch_bounds(546, 128, drop_last=True)
    assert len(keep) == 5 and keep[-1] == (512, 546) and sum(b - a for a, b in keep) == 546
    assert len(drop) == 4 and sum(b - a for a, b in drop) == 512
    # a last batch of one image joins the one before (BatchNorm cannot normalise one value)
    assert batch_bounds(129, 128) == [(0, 129)] and batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert batch_bounds(9, 4, drop_last=True) == [(0, 4), (4, 8)]
    assert batch_bounds(3, 8, drop_last=True) == [(0, 3)]  # fewer images than a batch: one batch
    # the sampler draws the permutation DataLoader(shuffle=True, generator=g) would
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = [i for b in ShuffledBatches(11, 4, False, g1) for i in b]
    ref = list(torch.utils.data.RandomSampler(range(11), generator=g2))
    assert got == ref and len(ShuffledBatches(11, 4, False, g1)) == 3


# -- tiny classification and segmentation units -------------------------------------------------

CLS = {
    "id": "loops", "title": "t", "family": "classification", "modality": "synthetic", "classes": ["a", "b"],
    "data": {"reader": "class_folders", "dir": "cls", "options": {"splits": ["Training", "Testing"]}},
    "split": {"source": "publisher", "map": {"Training": "train", "Testing": "test"}, "val": 0.25, "seed": 0, "group_by": "case"},
    "preprocess": {"size": 16}, "primary_metric": "accuracy", "suites": [],
}
SEG = {
    "id": "loops_seg", "title": "t", "family": "segmentation", "modality": "synthetic", "classes": ["background", "fg"],
    "data": {"reader": "kvasir_seg", "dir": "kv", "options": {"images": "images/*.png", "masks": "masks/{name}", "threshold": 128}},
    "split": {"source": "rule", "val": 0.2, "test": 0.2, "seed": 0, "stratify": False, "group_by": "case"},
    "preprocess": {"size": 16, "channels": 3, "intensity": "raw255", "resize": "nearest"}, "primary_metric": "dice", "suites": [],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loops")
    write_class_folders(root / "cls", n_train=10, n_test=4)  # 20 training images: 15 train + 5 val
    write_kvasir(root / "kv", n=17)  # 11 train / 3 val / 3 test
    return root


def context(base: dict, protocol: str, hp: dict, root: Path, cache: Path) -> RunContext:
    spec = TaskSpec.model_validate({**base, "protocols": {protocol: hp}})
    enc, ident = create_encoder("resnet18", seed=0)
    return RunContext(
        unit=RunUnit(suite="test", task_id=spec.id, protocol=protocol, encoder="resnet18", weights_sha256=ident.weights_sha256),
        task=spec, data=load_task_data(spec, root), encoder_identity=ident, make_encoder=lambda: copy.deepcopy(enc),
        settings=spec.settings(protocol), device=torch.device("cpu"), cache_dir=cache, run=RunOptions(progress=False, workers=0))


def torch_rates(make, epochs: int, spe: int) -> list[float]:
    """The rate of every step under one of torch's own schedulers, stepped per step."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched = make(opt)
    out = []
    for _ in range(epochs * spe):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


SCHEDULES = {
    "step": ({"kind": "step", "milestones": [1, 2], "gamma": 0.5}, lambda spe: lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [spe, 2 * spe], gamma=0.5)),
    "cosine": ({"kind": "cosine", "min_lr_factor": 0.1}, lambda spe: lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=3 * spe, eta_min=0.001)),
    "warmup": ({"kind": "constant", "warmup_epochs": 2, "warmup_start_factor": 0.2},
               lambda spe: lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.2, end_factor=1.0, total_iters=2 * spe)),
}


def check_history_rates(history: list[dict], kind: str, spe: int, first: str = "lr", last: str = "lr_last") -> None:
    ref = torch_rates(SCHEDULES[kind][1](spe), 3, spe)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for h in history:
        e = h["epoch"]
        assert h[first] == pytest.approx(ref[(e - 1) * spe], rel=1e-9), (kind, e, h)
        assert h[last] == pytest.approx(ref[e * spe - 1], rel=1e-9), (kind, e, h)


@pytest.mark.parametrize("kind", ["step", "cosine", "warmup"])
def test_finetune_sees_every_image_and_records_the_rate_each_epoch_used(data_root, tmp_path, kind):
    hp = {"epochs": 3, "batch_size": 4, "lr": 0.01, "schedule": SCHEDULES[kind][0]}
    ctx = context(CLS, "finetune", hp, data_root, tmp_path)
    n = len(ctx.train_cases())
    assert n == 15
    out = FineTune().run(ctx)
    assert out.timings["train_images"] == 3 * n  # 4 + 4 + 4 + 3 each epoch, not 12
    assert out.timings["train_steps"] == 3 * 4
    check_history_rates(out.extra["val_history"], kind, spe=4)


def test_finetune_drop_last_and_the_single_image_batch(data_root, tmp_path):
    out = FineTune().run(context(CLS, "finetune", {"epochs": 1, "batch_size": 4, "drop_last": True}, data_root, tmp_path))
    assert out.timings["train_images"] == 12 and out.timings["train_steps"] == 3
    out = FineTune().run(context(CLS, "finetune", {"epochs": 1, "batch_size": 7}, data_root, tmp_path))
    assert out.timings["train_images"] == 15 and out.timings["train_steps"] == 2  # 7 + 8, never a batch of one


def test_segmentation_sees_every_slice_and_records_the_rate_each_epoch_used(data_root, tmp_path):
    hp = {"epochs": 3, "batch_size": 4, "lr": 0.01, "schedule": SCHEDULES["cosine"][0], "hd95": False}
    ctx = context(SEG, "seg2d", hp, data_root, tmp_path)
    n = len(ctx.train_cases())
    out = Seg2D().run(ctx)
    assert out.timings["train_images"] == 3 * n and n % 4 not in (0, 1)
    check_history_rates(out.extra["val_history"], "cosine", spe=len(batch_bounds(n, 4)))


def test_linear_heads_see_every_feature_and_record_the_rates_used():
    seen: list[int] = []

    class Counting(nn.Linear):
        def forward(self, x):
            if self.training:
                seen.append(len(x))
            return super().forward(x)

    x, y = torch.randn(9, 5), torch.tensor([0, 1] * 4 + [0])
    sched = Schedule(kind="step", milestones=[1, 2], gamma=0.5)
    _, _, history = train_heads(lambda: Counting(5, 2), x, y, lambda h: 0.5, [0.01, 0.1], 3, 4, 0.0, torch.Generator().manual_seed(0), schedule=sched)
    assert seen == [4, 4, 5, 5] * 3  # two heads, three epochs; the ninth feature joins the second batch
    for lr in (0.01, 0.1):
        rows = [h for h in history if h["lr"] == lr]
        ref = [r * lr / 0.01 for r in torch_rates(SCHEDULES["step"][1](2), 3, 2)]
        assert [h["lr_used"] for h in rows] == pytest.approx(ref[0::2]) and [h["lr_used_last"] for h in rows] == pytest.approx(ref[1::2])
    seen.clear()
    train_heads(lambda: Counting(5, 2), x, y, lambda h: 0.5, [0.01], 1, 4, 0.0, torch.Generator().manual_seed(0), drop_last=True)
    assert seen == [4, 4]


# -- augmentation: off unless a task turns it on; recorded as it took effect ---------------------


def test_augmentation_is_off_by_default_and_inert_keys_resolve_off():
    spec = TaskSpec.model_validate({**CLS, "protocols": {"finetune": {}}})
    ft = spec.settings("finetune")
    assert (ft.augment, ft.hflip, ft.autocontrast, ft.drop_last) == (False, False, 0.0, False)

    def resolved(**hp):
        s = TaskSpec.model_validate({**CLS, "protocols": {"finetune": hp}})
        return s, s.settings("finetune")

    # hflip: true beside augment: false is recorded as false: it had no effect, and the identity agrees
    a, sa = resolved(augment=False, hflip=True, autocontrast=0.3)
    b, sb = resolved(augment=False, hflip=False)
    unit = RunUnit(suite="t", task_id="loops", protocol="finetune", encoder="e", weights_sha256="x")
    assert (sa.hflip, sa.autocontrast) == (False, 0.0) and spec_dict(a, unit, sa) == spec_dict(b, unit, sb)
    _, on = resolved(augment=True)
    assert on.augment and on.hflip
    _, nothing = resolved(augment=True, hflip=False)  # augmentation that changes nothing is off
    assert not nothing.augment
    _, metric = resolved(objective="ms", drop_last=True)
    assert metric.drop_last is False  # P x K batches are always full


def test_built_in_tasks_keep_their_paper_recipes():
    fg = get_task("fgadr_finetune").settings("finetune")
    assert (fg.augment, fg.crop, fg.hflip, fg.autocontrast) == (True, 480, True, 0.2)  # RandomCrop 480, flip, RandomAutocontrast 0.2
    brain = get_task("brain_tumor_finetune").settings("finetune")
    assert not brain.augment and not brain.hflip  # Resize(224) only
    for t in ("kvasir_det", "vindr_det", "bccd_det"):  # mmdet's RandomFlip 0.5
        det = get_task(t).settings("detection")
        assert det.augment and det.hflip and det.drop_last is False, t
        smoke = get_task(t).for_suite("smoke").settings("detection")
        assert smoke.augment and smoke.hflip, t
    for t in ("kvasir_seg", "brats2018"):  # LVM-Med's U-Nets: no augmentation
        proto = "seg2d" if t == "kvasir_seg" else "seg3d"
        assert get_task(t).settings(proto).augment is False
    default = TaskSpec.model_validate({**CLS, "family": "detection", "primary_metric": "ap50", "protocols": {"detection": {"hflip": True}}})
    assert (default.settings("detection").augment, default.settings("detection").hflip) == (False, False)


def test_autocontrast_is_torchvisions_on_the_images_drawn():
    from torchvision.transforms.v2.functional import autocontrast

    from lvmbench.protocols.finetune import augment

    x = torch.from_numpy(np.random.default_rng(0).integers(40, 200, (6, 3, 8, 8)).astype(np.uint8))
    assert torch.equal(augment(x, None, False, True, torch.Generator().manual_seed(0), 1.0), autocontrast(x))
    assert torch.equal(augment(x, None, False, True, torch.Generator().manual_seed(0), 0.0), x)
    assert torch.equal(augment(x, None, False, False, torch.Generator().manual_seed(0), 1.0), x)  # never at test


def test_detection_sees_every_image_and_records_the_rate_each_epoch_used(tmp_path, monkeypatch):
    from det_helpers import make_ctx

    from lvmbench.data.synth.detection import write_voc
    from lvmbench.protocols import detection as det_protocol
    from lvmbench.protocols.det import BACKENDS

    root = tmp_path / "BCCD"
    write_voc(root, np.random.default_rng(0), n=15, h=48, w=64)  # 9 training images
    sizes: list[int] = []
    backend = BACKENDS.get("torchvision")
    orig = backend.losses
    monkeypatch.setattr(backend, "losses", lambda self, model, images, targets: sizes.append(len(images)) or orig(self, model, images, targets))
    out = det_protocol.Detection().run(make_ctx(root, tmp_path / "c", {"epochs": 3, "batch_size": 2, "lr": 0.01, "schedule": SCHEDULES["step"][0], "val_every": 3}))
    assert sizes == [2, 2, 2, 3] * 3  # all 9 each epoch; the ninth joins the last batch
    check_history_rates(out.extra["val_history"], "step", spe=4)
    sizes.clear()
    det_protocol.Detection().run(make_ctx(root, tmp_path / "c2", {"epochs": 1, "batch_size": 4, "drop_last": True}))
    assert sizes == [4, 4]
