"""Every task spec validates; names resolve with suggestions; profiles merge."""

from __future__ import annotations

import pytest
import yaml

from lvmbench.data.cases import READERS
from lvmbench.errors import UnknownNameError, UserError
from lvmbench.protocols.base import PROTOCOLS
from lvmbench.spec import TaskSpec
from lvmbench.tasks import REPO_TASKS, all_tasks, get_task, load_task_file

LVMMED_15 = {
    "isic2018", "jsrt", "kvasir_seg", "drive", "buid", "brats2018", "mmwhs_ct", "mmwhs_mri", "prostate_ood",
    "fgadr_linear", "fgadr_finetune", "brain_tumor_linear", "brain_tumor_finetune", "vindr_det", "kvasir_det",
}


def test_every_task_file_validates():
    specs = all_tasks()
    assert specs, "no tasks discovered"
    for spec in specs:
        assert spec.folder is not None and spec.folder.name == spec.id
        assert spec.primary_metric in spec.metrics
        for suite in {*spec.suites, *spec.profiles}:
            merged = spec.for_suite(suite)
            assert isinstance(merged, TaskSpec)
            assert merged.data.reader in READERS, f"{spec.id}/{suite}: reader {merged.data.reader} not registered"
        for r in spec.reported:
            assert r.protocol in spec.protocols, f"{spec.id}: reported row for unknown protocol {r.protocol}"


def test_the_fifteen_lvmmed_tasks_are_registered():
    lvmmed = {t.id for t in all_tasks() if "lvmmed" in t.suites}
    assert not LVMMED_15 - lvmmed, f"LVM-Med tasks missing: {sorted(LVMMED_15 - lvmmed)}"


def test_every_lvmmed_task_has_a_smoke_profile():
    for t in all_tasks():
        if "lvmmed" in t.suites:
            assert "smoke" in t.profiles, f"{t.id} lacks a smoke profile"


def test_unknown_task_suggests_near_match():
    name = "brain-tumor_linear"
    with pytest.raises(UnknownNameError, match="did you mean 'brain_tumor_linear'"):
        get_task(name)
    with pytest.raises(UnknownNameError, match="did you mean 'linear'"):
        PROTOCOLS.get("linaer")


def test_profile_deep_merge_keeps_untouched_fields():
    spec = get_task("brain_tumor_linear")
    smoke = spec.for_suite("smoke")
    assert smoke.preprocess.size == 32 and smoke.preprocess.channels == spec.preprocess.channels
    assert smoke.protocols["linear"]["epochs"] == 10
    assert smoke.protocols["linear"]["heads"] == spec.protocols["linear"]["heads"]
    assert spec.preprocess.size == 224, "the base spec is not modified"


def test_invalid_task_file_gives_one_line(tmp_path):
    folder = tmp_path / "bad_task"
    folder.mkdir()
    raw = yaml.safe_load((REPO_TASKS / "brain_tumor_linear" / "task.yaml").read_text(encoding="utf-8"))
    raw["id"] = "bad_task"
    raw["family"] = "regression"
    (folder / "task.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_task_file(folder / "task.yaml")
    assert "family" in str(e.value) and "\n" not in str(e.value)


# -- typed protocol settings ----------------------------------------------------------------------


def _task_with(tmp_path, base: str, edit):
    """A copy of a repo task (id renamed) with ``edit(raw)`` applied, written as a task folder."""
    raw = yaml.safe_load((REPO_TASKS / base / "task.yaml").read_text(encoding="utf-8"))
    raw["id"] = "edited_task"
    edit(raw)
    folder = tmp_path / "edited_task"
    folder.mkdir(exist_ok=True)
    (folder / "task.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder / "task.yaml"


BAD_SETTINGS = [
    # (base task, edit, words the one line must contain)
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(epoch=3), ["unknown setting 'protocols.seg2d.epoch'", "did you mean 'epochs'"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(epochs=-3), ["protocols.seg2d.epochs", "greater than 0"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(batch_size=0), ["protocols.seg2d.batch_size", "greater than 0"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(lr="fast"), ["protocols.seg2d.lr", "valid number"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(lr="0.001"), ["protocols.seg2d.lr", "valid number"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(hd95="yes"), ["protocols.seg2d.hd95", "boolean"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(epochs=2.5), ["protocols.seg2d.epochs", "integer"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(lr=float("nan")), ["protocols.seg2d.lr"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(balanced=True), ["unknown setting 'protocols.seg2d.balanced'"]),  # a seg3d key
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(select_metric="dise"), ["select_metric 'dise'", "did you mean 'dice'"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(score_classes=[2]), ["score_classes [2]"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(schedule={"kind": "cosin"}), ["protocols.seg2d.schedule.kind", "did you mean 'cosine'"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(schedule={"kind": "step"}), ["needs milestones"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(schedule={"kind": "step", "milestones": [99]}), ["milestone 99"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(normalize="imagnet"), ["protocols.seg2d.normalize"]),
    ("kvasir_seg", lambda r: r["protocols"]["seg2d"].update(normalize={"mean": [0.5], "std": [0.0]}), ["protocols.seg2d.normalize"]),
    ("kvasir_seg", lambda r: r["profiles"]["smoke"]["protocols"]["seg2d"].update(epohcs=1), ["unknown setting 'profiles.smoke.protocols.seg2d.epohcs'", "did you mean 'epochs'"]),
    ("kvasir_seg", lambda r: r["protocols"].update(sed2d=r["protocols"].pop("seg2d")) or r.update(default_protocols=["sed2d"]), ["no protocol 'sed2d'", "did you mean 'seg2d'"]),
    ("brain_tumor_linear", lambda r: r["protocols"]["linear"].update(heads=["linear", "mpl"]), ["unknown head 'mpl'", "did you mean 'mlp'"]),
    ("brain_tumor_linear", lambda r: r["protocols"]["linear"]["head_params"]["mlp"].update(hiden=[8]), ["hiden"]),
    ("brain_tumor_linear", lambda r: r["protocols"]["linear"].update(lrs=[]), ["protocols.linear.lrs"]),
    ("brain_tumor_linear", lambda r: r["protocols"]["knn"].update(ks=[0]), ["protocols.knn.ks"]),
    ("brain_tumor_linear", lambda r: r["protocols"]["linear"].update(bn_mode="train"), ["protocols.linear.bn_mode"]),
    ("brain_tumor_linear", lambda r: r["protocols"]["linear"].update(augment=True), ["unknown setting 'protocols.linear.augment'"]),
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(backend="mmdett"), ["protocols.detection.backend", "(got 'mmdett')", "did you mean 'mmdet'"]),
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(frozen_stages=3), ["protocols.detection.frozen_stages"]),
    ("fgadr_finetune", lambda r: r["protocols"]["finetune"].update(ms_beta=40.0), ["ms_beta", "objective: ms"]),
    # a reported prompt row must say which metric it is: prompt results are not ranked by iou3d
    ("brats2018", lambda r: r["reported"].append({"encoder": "x", "protocol": "seg3d-prompt", "value": 80.0, "source": "s"}), ["states no metric", "ranked by 'iou3d_prompt'", "add metric: iou3d_prompt"]),
    # the transformer block: validated like the rest, whatever encoder runs
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(transformer={"lrr": 1e-4}), ["unknown setting 'protocols.detection.transformer.lrr'", "did you mean 'lr'"]),
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(transformer={"lr": -1.0}), ["protocols.detection.transformer.lr", "greater than 0"]),
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(transformer=1e-4), ["protocols.detection.transformer", "must map setting names"]),
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(transformer={}), ["protocols.detection.transformer", "must map setting names"]),
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(transformer={"transformer": {"lr": 1.0}}), ["must map setting names"]),
    ("kvasir_det", lambda r: r["protocols"]["detection"].update(transfomer={"lr": 1e-4}), ["unknown setting 'protocols.detection.transfomer'", "did you mean 'transformer'"]),
    ("kvasir_det", lambda r: r["profiles"]["smoke"]["protocols"]["detection"]["transformer"].update(epoch=3), ["profiles.smoke.protocols.detection.transformer.epoch", "did you mean 'epochs'"]),
]


@pytest.mark.parametrize("base,edit,words", BAD_SETTINGS, ids=[f"{b}-{i}" for i, (b, _, _) in enumerate(BAD_SETTINGS)])
def test_a_bad_protocol_setting_is_one_line_naming_task_and_key(tmp_path, base, edit, words):
    path = _task_with(tmp_path, base, edit)
    with pytest.raises(UserError) as e:
        load_task_file(path)
    line = str(e.value)
    assert "\n" not in line and str(path) in line and "edited_task" in line, line
    for w in words:
        assert w in line, line


def test_resolved_settings_fill_task_dependent_defaults():
    seg = get_task("prostate_ood").settings("seg3d")
    assert seg.score_classes == [1] and seg.select_metric == "dice" and seg.eval_batch_size >= 16
    ood2d = get_task("drive_chase_ood").settings("seg2d")
    assert ood2d.select_metric == "dice"  # the in-distribution part of the primary dice_avg
    lin = get_task("brain_tumor_linear").settings("linear")
    assert lin.select_metric == "accuracy" and lin.schedule.kind == "constant"
    ft = get_task("brain_tumor_finetune").for_suite("smoke").settings("finetune")
    assert ft.eval_batch_size == max(ft.batch_size, 64)


def test_good_recipes_validate(tmp_path):
    def recipe(r):
        r["protocols"]["seg2d"].update(
            schedule={"kind": "step", "milestones": [10, 20], "gamma": 0.5, "warmup_epochs": 1.5},
            normalize={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            augment=True,
            select_metric="iou",
        )
        r["profiles"]["smoke"]["protocols"]["seg2d"]["schedule"] = "cosine"
        r["profiles"]["shared-data"]["protocols"]["seg2d"]["schedule"] = "cosine"

    spec = load_task_file(_task_with(tmp_path, "kvasir_seg", recipe))
    s = spec.settings("seg2d")
    assert s.schedule.milestones == [10, 20] and s.normalize.std == [0.25, 0.25, 0.25] and s.select_metric == "iou"
    assert spec.for_suite("smoke").settings("seg2d").schedule.kind == "cosine"


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    """PyYAML reads `1e-3` as text (YAML 1.1); task files read it as YAML 1.2 does, a number,
    while a quoted "1e-3" stays text and is refused by the typed settings."""
    folder = tmp_path / "edited_task"
    folder.mkdir()
    text = (REPO_TASKS / "kvasir_seg" / "task.yaml").read_text(encoding="utf-8").replace("id: kvasir_seg", "id: edited_task")
    (folder / "task.yaml").write_text(text.replace("    lr: 0.001 ", "    lr: 1e-3 "), encoding="utf-8")
    assert load_task_file(folder / "task.yaml").settings("seg2d").lr == 0.001
    (folder / "task.yaml").write_text(text.replace("    lr: 0.001 ", '    lr: "1e-3" '), encoding="utf-8")
    with pytest.raises(UserError, match="protocols.seg2d.lr"):
        load_task_file(folder / "task.yaml")
