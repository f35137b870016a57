"""The detection protocol end to end on tiny synthetic data: records, selection, paper flags, resume,
the data pipeline, and (slow) AP above the random-box baseline on the smoke tasks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from det_helpers import TINY, make_ctx  # noqa: F401

from lvmbench.data.cache import ArrayCache
from lvmbench.data.synth.detection import write_voc
from lvmbench.data.task_data import load_task_data
from lvmbench.encoders import create_encoder
from lvmbench.metrics.detection import ap_from_records
from lvmbench.protocols import detection as det_protocol
from lvmbench.protocols.base import RunContext
from lvmbench.protocols.det import BACKENDS
from lvmbench.protocols.det.data import DetectionDataset, Resize, hflip, repeat_factor_indices
from lvmbench.spec import RunOptions, RunUnit, TaskSpec  # noqa: F401


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("det") / "BCCD"
    write_voc(root, np.random.default_rng(0), n=15, h=48, w=64)
    return root


def test_protocol_records_and_selection(voc_root, tmp_path):
    ctx = make_ctx(voc_root, tmp_path, {})
    out = det_protocol.Detection().run(ctx)
    assert {"ap50", "ap", "ap75", "ar100"} <= set(out.metrics)
    assert ctx.settings.backend == "torchvision" and out.hparams["test_resize"] == "keep_ratio"
    assert out.hparams["selected"]["rule"] == "best validation AP50"
    assert out.counts == {"train": 9, "val": 3, "test": 3} and not out.flags
    assert len(out.per_case) == 3 and {r["split"] for r in out.per_case} == {"test"}
    # the per-case match records recompute the dataset AP50 exactly
    assert ap_from_records(out.per_case)[0] == pytest.approx(out.metrics["ap50"], abs=1e-9)
    r = out.per_case[0]
    assert r["tp"] + r["fn"] == sum(r["n_gt"].values())
    assert "random_box" in out.extra and len(out.extra["val_history"]) == 2
    assert not list((tmp_path / "resume").rglob("*.pt"))  # the resume checkpoint is removed at the end


def test_paper_eval_is_flagged_and_scores_the_last_epoch(voc_root, tmp_path):
    out = det_protocol.Detection().run(make_ctx(voc_root, tmp_path, {"paper_eval": True, "epochs": 1}))
    assert out.flags == ["paper-eval"]
    assert out.hparams["test_resize"] == "mmdet_test"
    assert out.hparams["selected"]["rule"].startswith("last epoch")


def _crash_after_save(monkeypatch, saves: list):
    """Every epoch is saved (LVMBENCH_RESUME_EVERY_S=0) and the run stops right after the first save."""
    from lvmbench.protocols.resume import Resume

    real_save = Resume.save

    def save_then_crash(self, model, opt, sched, state):
        real_save(self, model, opt, sched, state)
        saves.append(state["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setenv("LVMBENCH_RESUME_EVERY_S", "0")
    monkeypatch.setattr(Resume, "save", save_then_crash)
    return real_save


def test_resume_after_an_interrupted_epoch(voc_root, tmp_path, monkeypatch):
    from lvmbench.protocols.resume import Resume

    saves: list = []
    real_save = _crash_after_save(monkeypatch, saves)
    with pytest.raises(KeyboardInterrupt):
        det_protocol.Detection().run(make_ctx(voc_root, tmp_path, {"epochs": 3}))
    assert saves == [1] and len(list((tmp_path / "resume").rglob("*.pt"))) == 1
    monkeypatch.setattr(Resume, "save", real_save)
    steps = []
    orig = BACKENDS.get("torchvision").losses

    def counting(self, *a, **k):
        steps.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(BACKENDS.get("torchvision"), "losses", counting)
    out = det_protocol.Detection().run(make_ctx(voc_root, tmp_path, {"epochs": 3}))
    assert [h["epoch"] for h in out.extra["val_history"]] == [1, 2, 3]
    assert len(steps) == 2 * 2  # epochs 2 and 3 only (9 images, batch 4, drop_last)
    assert not list((tmp_path / "resume").rglob("*.pt"))


def test_damaged_resume_checkpoint_restarts_from_scratch(voc_root, tmp_path, monkeypatch):
    from lvmbench.protocols.resume import Resume

    real_save = _crash_after_save(monkeypatch, [])
    with pytest.raises(KeyboardInterrupt):
        det_protocol.Detection().run(make_ctx(voc_root, tmp_path, {"epochs": 2}))
    monkeypatch.setattr(Resume, "save", real_save)
    (ckpt,) = list((tmp_path / "resume").rglob("*.pt"))
    ckpt.write_bytes(b"truncated")
    out = det_protocol.Detection().run(make_ctx(voc_root, tmp_path, {"epochs": 2}))
    assert [h["epoch"] for h in out.extra["val_history"]] == [1, 2]
    assert not ckpt.exists()


def test_mmdet_backend_runs_the_same_protocol(voc_root, tmp_path):
    why = BACKENDS.get("mmdet").unavailable()
    if why:
        pytest.skip(f"mmdet backend unavailable ({why}); build it with scripts/build_mmcv.sh")
    ctx = make_ctx(voc_root, tmp_path, {"epochs": 1}, backend="mmdet")
    out = det_protocol.Detection().run(ctx)
    assert ctx.settings.backend == "mmdet"
    assert ap_from_records(out.per_case)[0] == pytest.approx(out.metrics["ap50"], abs=1e-9)


def test_unknown_hyperparameter_is_a_user_error(voc_root, tmp_path):
    from lvmbench.errors import UserError

    with pytest.raises(UserError, match="lr_decay"):
        det_protocol.Detection().run(make_ctx(voc_root, tmp_path, {"lr_decay": 0.1}))


def test_dataset_resize_flip_and_cache(voc_root, tmp_path):
    from lvmbench.data.cases import make_reader

    reader = make_reader("voc", voc_root, {"classes": ["WBC", "RBC", "Platelets"]})
    cases = reader.cases()[:4]
    cache = ArrayCache(tmp_path / "c")
    ds = DetectionDataset(reader, cases, Resize("keep_ratio", 32), 3, cache)
    s = ds[0]
    assert tuple(s["image"].shape) == (3, 24, 32) and s["scale"] == (0.5, 0.5)
    raw = reader.load_target(cases[0])
    assert np.allclose(s["boxes"].numpy(), [[b.x1 / 2, b.y1 / 2, b.x2 / 2, b.y2 / 2] for b in raw])
    ds[0]
    assert cache.hits >= 2  # size and image both served from the cache the second time
    f = hflip(s)
    assert torch.equal(f["image"], s["image"].flip(-1))
    assert np.allclose(f["boxes"][:, [0, 2]].numpy(), 32 - s["boxes"][:, [2, 0]].numpy())
    assert Resize("mmdet_test", 512).shape(480, 640) == (800, 1067)  # min(1333/640, 800/480)
    assert Resize("stretch", 50).shape(480, 640) == (50, 50)


def test_class_balanced_repeat_factors():
    labels = [np.array([0]), np.array([0]), np.array([0]), np.array([1]), np.array([], np.int64)]
    idx = repeat_factor_indices(labels, 2, 0.4)
    # class 0 in 3/5 images (>= 0.4): r = 1; class 1 in 1/5: r = sqrt(0.4 / 0.2) = 1.41 -> 2 copies
    assert sorted(idx) == [0, 1, 2, 3, 3, 4]
    assert repeat_factor_indices(labels, 2, None) == [0, 1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["bccd_det", "kvasir_det", "vindr_det"])
def test_smoke_tasks_beat_random_boxes(task, synth_root, tmp_path):
    from lvmbench.tasks import get_task

    spec = get_task(task).for_suite("smoke")
    data = load_task_data(spec, synth_root)
    enc, ident = create_encoder("resnet18", seed=0)
    unit = RunUnit(suite="smoke", task_id=task, protocol="detection", encoder="resnet18", weights_sha256=ident.weights_sha256)
    ctx = RunContext(unit=unit, task=spec, data=data, encoder_identity=ident, make_encoder=lambda: copy.deepcopy(enc), settings=spec.settings("detection"),
                     device=torch.device("cpu"), cache_dir=tmp_path, run=RunOptions(progress=False, workers=0))
    out = det_protocol.Detection().run(ctx)
    assert out.metrics["ap50"] > out.extra["random_box"]["ap50"] + 0.1
