"""Split files: freezing a rule, importing LVM-Med's lists, overlap and flawed-split handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared

from lvmbench.data.cases import Case
from lvmbench.data.data_commands import freeze_split
from lvmbench.data.split_import import import_lists, load_paper_lists
from lvmbench.data.splits import frozen_split_path, make_split, read_split_file, write_split_file
from lvmbench.data.task_data import load_task_data
from lvmbench.errors import DataError, UserError
from lvmbench.spec import RunOptions, SplitSpec
from lvmbench.tasks import get_task

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "lvmmed_splits"


@pytest.fixture(autouse=True)
def splits_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "splits"
    monkeypatch.setenv("LVMBENCH_SPLITS", str(d))
    return d


def ref(name: str) -> Path:
    p = REF / name
    if not p.is_file():
        pytest.skip(f"{p} not present")
    return p


def _lists(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "lists.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    return p


def _cases(names, group=lambda n: n):
    return [Case(id=n, group=group(n), image=f"images/{n}", files=(f"images/{n}",)) for n in names]


def test_freeze_then_runs_use_the_file_until_it_is_deleted(synth_root, splits_dir):
    spec = get_task("retinamnist_linear").for_suite("smoke")
    rule = load_task_data(spec, synth_root, suite="smoke").split
    path, frozen = freeze_split(spec, "smoke", synth_root)
    assert path == splits_dir / "smoke" / "retinamnist_linear.json" and frozen.hash() == rule.hash()
    with pytest.raises(UserError, match="already exists.*--force"):
        freeze_split(spec, "smoke", synth_root)
    # edit the file: runs of the smoke suite now follow it (and only that suite)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["val"], doc["test"] = doc["val"][:10], doc["test"] + doc["val"][10:]
    path.write_text(json.dumps(doc), encoding="utf-8")
    used = load_task_data(spec, synth_root, suite="smoke").split
    assert str(path) in used.origin and len(used.val) == 10 and used.hash() != rule.hash()
    assert load_task_data(spec, synth_root, suite="lvmmed").split.hash() == rule.hash()
    path.unlink()
    assert load_task_data(spec, synth_root, suite="smoke").split.hash() == rule.hash()


def test_split_file_naming_missing_cases_is_refused(tmp_path):
    cases = _cases(["a.jpg", "b.jpg", "c.jpg"])
    split = make_split(cases, SplitSpec(val=0.3, test=0.3, stratify=False))
    write_split_file(tmp_path / "s.json", split, task="t", suite="lvmmed", origin="test", cases=cases)
    assert read_split_file(tmp_path / "s.json", cases).hash() == split.hash()
    with pytest.raises(DataError, match="not in the dataset"):
        read_split_file(tmp_path / "s.json", cases[:2])


def test_task_split_file_is_found_in_task_folder_then_splits_folder(tmp_path, splits_dir):
    cases = _cases(["a", "b", "c", "d"])
    (splits_dir).mkdir(parents=True)
    (splits_dir / "mine.json").write_text(json.dumps({"train": ["a", "b"], "val": ["c"], "test": ["d"]}), encoding="utf-8")
    split = make_split(cases, SplitSpec(source="file", file="mine.json"), task_folder=tmp_path / "task")
    assert [c.id for c in split.test] == ["d"]
    with pytest.raises(DataError, match="split file 'other.json' not found.*data split TASK"):
        make_split(cases, SplitSpec(source="file", file="other.json"), task_folder=tmp_path / "task")


def test_overlap_by_patient_is_refused_and_can_be_accepted_as_flawed(tmp_path):
    cases = _cases(["p1_a.png", "p1_b.png", "p2_a.png", "p3_a.png"], group=lambda n: n[:2])
    lists = load_paper_lists(_lists(tmp_path, {"train": ["p1_a.png", "p3_a.png"], "valid": [], "test": ["p1_b.png", "p2_a.png"]}))
    with pytest.raises(DataError, match="refusing a flawed split: train and test share 0 cases / 1 patients.*--allow-flawed-split"):
        import_lists(lists, cases)
    res = import_lists(lists, cases, allow_flawed=True)
    assert res.split.flags == ["flawed-split:overlap-train-test"] and res.allow_overlap == [("train", "test")]


def test_val_equal_to_test_is_refused_flagged_or_carved(tmp_path, synth_root, cache_dir, splits_dir):
    # FGADR's list layout ([path, grade] pairs, val == test) against the synthetic FGADR copy
    from lvmbench.data.cases import make_reader

    cases = make_reader("fgadr", synth_root / "FGADR").cases()
    entry = lambda c: [f"/mnt/sda/haal02-data/FGADR-Seg-Set/Seg-set/Original_Images/{c.id}", c.label]
    # every fourth case held out, so that each class is in each part (a class missing from train is refused)
    train, held = [c for i, c in enumerate(cases) if i % 4], [c for i, c in enumerate(cases) if not i % 4]
    doc = {"train": [entry(c) for c in train], "val": [entry(c) for c in held], "test": [entry(c) for c in held]}
    lists = load_paper_lists(_lists(tmp_path, doc))
    with pytest.raises(DataError, match="val list equals its test list.*--carve-val"):
        import_lists(lists, cases)
    carved = import_lists(lists, cases, carve_val=0.2, seed=1)
    assert not carved.split.flags and len(carved.split.val) == 18 and len(carved.split.train) == 72 and len(carved.split.test) == 30
    assert {c.id for c in carved.split.val}.isdisjoint(c.id for c in carved.split.test)
    flawed = import_lists(lists, cases, allow_flawed=True)
    assert flawed.split.flags == ["flawed-split:val-equals-test"]
    assert any("labels: all 120 listed labels agree" in line for line in flawed.report)

    # written, then used by a run: the result carries the flag
    spec = get_task("fgadr_linear").for_suite("smoke")
    write_split_file(frozen_split_path(spec.id, "smoke"), flawed.split, task=spec.id, suite="smoke", origin=flawed.origin, cases=cases, allow_overlap=flawed.allow_overlap)
    from lvmbench.results import iter_results
    from lvmbench.runner import EvalRequest, run

    explicit = tmp_path / "explicit-cache"  # --cache-dir wins over $LVMBENCH_CACHE (= cache_dir here)
    req = EvalRequest(encoder="resnet18", suite="smoke", tasks=["fgadr_linear"], protocols=["knn"], data_root=synth_root, results=tmp_path / "r", cache_dir=explicit, run=RunOptions(progress=False, workers=0))
    logged: list[str] = []
    assert run(req, log=logged.append).ok, "\n".join(logged)
    ((_, record),) = list(iter_results(tmp_path / "r"))
    assert "flawed-split:val-equals-test" in record.flags
    assert {p.name for p in explicit.iterdir()} >= {"decoded", "features", "verified"} and not cache_dir.exists()


def test_cli_import_and_split_errors_are_one_line(tmp_path, synth_root, splits_dir):
    import os
    import subprocess
    import sys

    from lvmbench.data.cases import make_reader

    cases = make_reader("fgadr", synth_root / "FGADR").cases()
    names = [c.id for c in cases]
    lists = _lists(tmp_path, {"train": names[:90], "val": names[90:], "test": names[90:]})
    env = {**os.environ, "LVMBENCH_SPLITS": str(splits_dir), "LVMBENCH_CACHE": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "lvmbench.cli", "data"]
    args = ["import-splits", str(lists), "--task", "fgadr_linear", "--suite", "smoke", "--data-root", str(synth_root)]
    r = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (err,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "refusing a flawed split: its val list equals its test list" in err and "--carve-val" in err
    assert "overlap val/test: 30 cases, 30 patients/volumes (val equals test)" in r.stdout
    r = subprocess.run([*cli, *args, "--allow-flawed-split"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "flags: flawed-split:val-equals-test" in r.stdout and (splits_dir / "smoke" / "fgadr_linear.json").is_file()
    r = subprocess.run([*cli, "split", "fgadr_linear", "--suite", "smoke", "--data-root", str(synth_root)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "already exists; fix: pass --force" in r.stderr


def test_missing_listed_files_need_allow_missing(tmp_path):
    cases = _cases(["a.jpg", "b.jpg", "c.jpg"])
    lists = load_paper_lists(_lists(tmp_path, {"train": ["a.jpg", "x.jpg"], "valid": ["b.jpg"], "test": ["c.jpg"]}))
    with pytest.raises(DataError, match="1 of 4 listed files are not in the dataset.*--allow-missing"):
        import_lists(lists, cases)
    assert import_lists(lists, cases, allow_missing=True).split.flags == ["partial-split:3/4"]


def test_names_match_without_spaces_and_case(tmp_path):
    cases = _cases(["benign (12).png", "malignant (3).png", "benign (7).png"])
    lists = load_paper_lists(_lists(tmp_path, {"train": ["benign(12).png"], "valid": ["BENIGN (7).png"], "test": ["malignant (3).png"]}))
    split = import_lists(lists, cases).split
    assert [c.id for c in split.train] == ["benign (12).png"] and [c.id for c in split.val] == ["benign (7).png"]


def test_lvmmed_kvasir_list_matches_the_real_copy():
    lists = load_paper_lists(ref("Kvasir.json"))
    spec = get_task("kvasir_seg").for_suite("shared-data")
    cases = load_task_data(spec, shared("kvasir_seg").parent).cases
    res = import_lists(lists, cases)
    assert res.split.counts() == {"train": 640, "val": 160, "test": 200} and not res.split.flags


def test_lvmmed_buid_list_on_the_subset_is_partial():
    lists = load_paper_lists(ref("BUID.json"))
    spec = get_task("buid").for_suite("shared-data")
    from lvmbench.data.task_data import task_reader

    cases = task_reader(spec, shared("busi_subset")).cases()
    with pytest.raises(DataError, match="not in the dataset"):
        import_lists(lists, cases)
    res = import_lists(lists, cases, allow_missing=True)
    assert res.split.counts() == {"train": 66, "val": 16, "test": 17}  # data README's cross-check
    assert res.split.flags == ["partial-split:99/647"]


def test_lvmmed_mmwhs_frames_map_to_volumes():
    lists = load_paper_lists(ref("MMWHS_CT_Heart.json"))
    cases = [Case(id=f"ct_train_{v}", group=f"ct_train_{v}", image=f"ct_train/ct_train_{v}_image.nii.gz") for v in range(1001, 1021)]
    res = import_lists(lists, cases)
    ids = {s: sorted(c.id[-4:] for c in res.split[s]) for s in ("train", "val", "test")}
    assert ids["test"] == ["1002", "1010", "1012", "1019"] and ids["val"] == ["1004", "1007", "1013"] and len(ids["train"]) == 13
