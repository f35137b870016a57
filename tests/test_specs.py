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
    missing = LVMMED_15 - lvmmed
    if missing:
        pytest.xfail(f"tasks not yet added: {sorted(missing)}")
    assert lvmmed >= LVMMED_15


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
    raw = yaml.safe_load((REPO_TASKS / "brain_tumor_linear" / "task.yaml").read_text())
    raw["id"] = "bad_task"
    raw["family"] = "regression"
    (folder / "task.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as e:
        load_task_file(folder / "task.yaml")
    assert "family" in str(e.value) and "\n" not in str(e.value)
