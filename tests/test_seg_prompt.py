"""Prompt-based (SAM-style) segmentation protocols: smoke units beat the box they are given, the 3D prompt
metric against a brute-force loop (and apart from Table 3's iou3d), decoder weights in the
identity, and the default protocols left as they were."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lvmbench.errors import CheckpointError
from lvmbench.protocols.seg_data import Prepared
from lvmbench.protocols.seg_prompt import PromptSet, Seg2DPrompt, Seg3DPrompt
from lvmbench.spec import RunOptions
from lvmbench.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")

SEG_TASKS = ["isic2018", "jsrt", "kvasir_seg", "drive", "buid", "drive_chase_ood", "brats2018", "mmwhs_ct", "mmwhs_mri", "prostate_ood", "hippocampus_seg3d"]


def test_prompt_smoke_units_beat_the_box_they_were_given(tmp_path, synth_root, cache_dir):
    from lvmbench.runner import EvalRequest, run

    req = EvalRequest(encoder="resnet18", suite="smoke", tasks=["kvasir_seg", "mmwhs_ct"], protocols=["seg2d-prompt", "seg3d-prompt"],
                      data_root=synth_root, results=tmp_path / "r", cache_dir=cache_dir, run=RunOptions(progress=False, workers=0))
    summary = run(req, log=lambda s: None)
    assert len(summary.done) == 2 and not summary.failed and not summary.below_baseline, (summary.failed, summary.below_baseline)
    res = {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "r").rglob("*.json")}
    r3 = res["mmwhs_ct"]
    assert r3["primary_metric"] == "iou3d_prompt" and "iou3d" not in r3["metrics"], "never under Table 3's name"
    base = r3["extra"]["baseline"]
    assert base["metric"] == "iou3d_prompt" and base["predictor"].startswith("the prompt box filled") and base["value"] > 0.3
    assert r3["extra"]["all_background"]["value"] < base["value"]
    # preset lvmmed: slices without the heart get LVM-Med's random box and are scored (empty = 1)
    assert r3["counts"]["test_unprompted"] == 0 and r3["extra"]["conventions"]["empty_policy"] == "random-box,empty=1"
    vol = next(c for c in r3["per_case"] if c["prompted_slices"])
    assert len(vol["boxes"]) == vol["prompted_slices"]
    r2 = res["kvasir_seg"]
    assert r2["hyperparameters"]["image_size"] == 64 and r2["hyperparameters"]["mask_size"] == 16
    assert all(len(c["box"]) == 4 for c in r2["per_case"])
    assert r2["extra"]["baseline"] == r2["extra"]["box_fill"] and r2["extra"]["box_fill"]["value"] > 0.5
    assert r2["extra"]["conventions"]["prompt_preset"] == "lvmmed" and r2["hyperparameters"]["prompt_origin"] == "drawn"


def brute_slice_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else inter / union


def test_3d_prompt_metric_is_the_slice_average_not_the_volumetric_iou():
    rng = np.random.default_rng(0)
    n_vol, slices, m = 3, 5, 16
    density = np.linspace(0.02, 0.9, n_vol * slices)[:, None, None]  # small and large objects: slices weigh differently
    targets = torch.from_numpy(rng.random((n_vol * slices, m, m)) < density).to(torch.uint8)
    logits = torch.from_numpy(rng.normal(size=(n_vol * slices, m, m))).float()
    owner = [v for v in range(n_vol) for _ in range(slices)]
    cases = [SimpleNamespace(id=str(v), group=str(v), meta={}) for v in range(n_vol)]
    prep = Prepared(cases=cases, images=[], masks=[])
    ps = PromptSet(torch.zeros(len(owner), 1, 1, 1), targets, torch.zeros(len(owner), 4), owner, [i % slices for i in range(len(owner))], prep)
    hp = SimpleNamespace(prompt_classes=[1], hd95=False)
    metrics, records, _ = Seg3DPrompt().score(ps, logits, hp, "test")
    pred = (logits > 0).numpy()
    per_slice = [brute_slice_iou(pred[i], targets[i].numpy().astype(bool)) for i in range(len(owner))]
    want = np.mean([np.mean(per_slice[v * slices : (v + 1) * slices]) for v in range(n_vol)])
    assert metrics["iou3d_prompt"] == pytest.approx(want, abs=1e-6)
    volumetric = np.mean([brute_slice_iou(pred[v * slices : (v + 1) * slices], targets[v * slices : (v + 1) * slices].numpy().astype(bool)) for v in range(n_vol)])
    assert abs(metrics["iou3d_prompt"] - volumetric) > 1e-3, "a different quantity from Table 3's volumetric IoU"
    assert [r["score"] for r in records] == pytest.approx([np.mean(per_slice[v * slices : (v + 1) * slices]) for v in range(n_vol)], abs=1e-5)


def test_decoder_weights_join_the_settings_and_identity(tmp_path):
    task = get_task("kvasir_seg").for_suite("smoke")
    hp = task.settings("seg2d-prompt")
    assert hp.decoder_weights is None and Seg2DPrompt.plan_settings(hp, {}) is hp
    f = tmp_path / "dec.pth"
    torch.save({"mask_decoder.x": torch.zeros(1)}, f)
    got = Seg2DPrompt.plan_settings(hp, {"decoder_weights": str(f)})
    assert got.decoder_weights == str(f.resolve()) and len(got.decoder_sha256) == 64
    torch.save({"mask_decoder.x": torch.ones(1)}, f)
    assert Seg2DPrompt.plan_settings(hp, {"decoder_weights": str(f)}).decoder_sha256 != got.decoder_sha256
    with pytest.raises(CheckpointError, match="decoder weights file not found"):
        Seg2DPrompt.plan_settings(hp, {"decoder_weights": str(tmp_path / "missing.pth")})


def test_3d_prompt_primary_metric_is_a_reported_prompt_metric():
    want = {"iou3d": "iou3d_prompt", "dice3d": "dice3d_prompt", "dice": "dice_prompt", "dice_avg": "dice_prompt_avg"}
    assert {p: Seg3DPrompt.primary_for(SimpleNamespace(primary_metric=p)) for p in want} == want
    assert Seg2DPrompt.primary_for(SimpleNamespace(primary_metric="iou3d")) == "dice"


@pytest.mark.parametrize("task_id", SEG_TASKS)
def test_every_segmentation_task_has_the_new_protocols_outside_its_defaults(task_id):
    task = get_task(task_id)
    d = "3d" if task.dims.startswith("3d") else "2d"
    assert {f"seg{d}-vit", f"seg{d}-prompt", f"seg{d}-prompt-zeroshot"} <= set(task.protocols)
    for spec in [task, *(task.for_suite(s) for s in task.profiles)]:
        assert spec.default_protocols == [f"seg{d}"]
        spec.settings(f"seg{d}-prompt")  # validates and resolves
    if "smoke" in task.profiles:
        assert task.for_suite("smoke").settings(f"seg{d}-prompt").image_size == 64
    assert Seg3DPrompt.primary_for(task) != "iou3d" and Seg2DPrompt.primary_for(task) != "iou3d"
