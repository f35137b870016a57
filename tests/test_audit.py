"""Leakage audit: manifest formats, matching by name / content / patient, the report in the results
tree, and the leaderboard footnote on the affected cells."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from builders import cls_records, make_record, write_records

from lvmbench.audit import audit_task, identifying_suffix, load_audits, read_manifest
from lvmbench.data.cases import Case
from lvmbench.errors import UserError


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_manifest_formats(tmp_path):
    lst = tmp_path / "lvm-med-training-data" / "ISIC2019_Color_Skin" / "file_list.txt"
    lst.parent.mkdir(parents=True)
    lst.write_text("# comment\nISIC_2019_Training_Input/ISIC_0000001.jpg\n\n  ISIC_2019_Training_Input/ISIC_0000002.jpg  \n", encoding="utf-8")
    (tmp_path / "lvm-med-training-data" / "BUSI" / "file_list.txt").parent.mkdir()
    (tmp_path / "lvm-med-training-data" / "BUSI" / "file_list.txt").write_text("benign/benign (1).png\n", encoding="utf-8")
    one = read_manifest(lst)
    assert [e.path for e in one.entries] == ["ISIC_2019_Training_Input/ISIC_0000001.jpg", "ISIC_2019_Training_Input/ISIC_0000002.jpg"]
    folder = read_manifest(tmp_path / "lvm-med-training-data")
    assert len(folder.entries) == 3 and folder.entries[0].path.startswith("BUSI/")
    pre = tmp_path / "pretrain.json"
    pre.write_text(json.dumps({"encoder": {"name": "resnet18"}, "output": {"encoder_sha256": "ab" * 32}, "data": {"manifest": [{"path": "/d/x.png", "sha256": "00" * 32}, {"path": "/d/s.tar", "member": "k/1.png", "sha256": "11" * 32}]}}), encoding="utf-8")
    m = read_manifest(pre)
    assert m.encoder == "resnet18@" + "ab" * 6 and m.entries[1].path == "/d/s.tar::k/1.png" and m.entries[0].sha256 == "00" * 32
    plain = tmp_path / "list.json"
    plain.write_text(json.dumps(["a/b.png", {"path": "c.png", "sha256": "22" * 32}]), encoding="utf-8")
    assert [e.sha256 for e in read_manifest(plain).entries] == [None, "22" * 32]
    for text, needle in [("{not json", "not valid JSON"), ('{"x": 1}', "no list of files"), ("[3]", "entry 0"), ("[]", "lists no files")]:
        bad = tmp_path / "bad.json"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=needle):
            read_manifest(bad)
    with pytest.raises(UserError, match="cannot read the manifest"):
        read_manifest(tmp_path / "missing.txt")


def test_identifying_suffix_needs_folders_only_where_names_repeat():
    files = ["Training/glioma/image(1).jpg", "Testing/glioma/image(1).jpg", "Testing/glioma/image(2).jpg", "Training/glioma/image(2).jpg", "x/ISIC_001.jpg"]
    got = identifying_suffix(files)
    assert got["Testing/glioma/image(1).jpg"] == ("testing", "glioma", "image(1)")
    assert got["x/ISIC_001.jpg"] == ("isic_001",)


def _fake_task(tmp_path: Path, group_by: str = "patient"):
    """Six test cases of three patients plus training cases, files on disk."""
    root = tmp_path / "data"
    cases = []
    for i, (pid, split) in enumerate([("BraTS18_TCIA01_150", "test")] * 2 + [("BraTS18_CBICA_AAB", "test")] * 2 + [("1234", "test")] * 2 + [("BraTS18_2013_7", "train")] * 2):
        rel = f"{split}/{pid}/slice_{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"image {i}".encode())
        cases.append(Case(id=rel, group=pid, image=rel, files=(rel,), meta={"split": split}))
    split = SimpleNamespace(test=[c for c in cases if c.meta["split"] == "test"])
    task = SimpleNamespace(id="brats_fake", split=SimpleNamespace(group_by=group_by))
    return task, SimpleNamespace(cases=cases, split=split, root=root)


def test_audit_finds_names_contents_and_patients(tmp_path):
    task, data = _fake_task(tmp_path)
    man = tmp_path / "m.json"
    renamed = _sha(data.root / "test/BraTS18_CBICA_AAB/slice_2.png")
    man.write_text(
        json.dumps(
            [
                "/pre/BraTS/test/BraTS18_TCIA01_150/slice_0.png",  # same path suffix: by name
                {"path": "/pre/other/renamed.png", "sha256": renamed},  # same bytes, other name: by content
                "/pre/BraTS2018/brats18_tcia01_150_t1_slice77.png",  # same patient, other slice: by patient
                "/pre/misc/1234_scan.png",  # generic patient id: not matched
                "/pre/BraTS/train/BraTS18_2013_7/slice_6.png",  # a training case: no finding
            ]
        ),
        encoding="utf-8",
    )
    f = audit_task(task, data, read_manifest(man))
    assert [m["case"] for m in f["by_name"]] == ["test/BraTS18_TCIA01_150/slice_0.png"]
    assert [m["case"] for m in f["by_content"]] == ["test/BraTS18_CBICA_AAB/slice_2.png"]
    assert sorted(m["case"] for m in f["by_patient"]) == ["test/BraTS18_TCIA01_150/slice_0.png", "test/BraTS18_TCIA01_150/slice_1.png"]
    assert f["affected_cases"] == 3 and f["test_cases"] == 6
    assert "checked 2 of 3" in f["patient_check"] and "'1234'" in f["patient_check"]
    per_case = audit_task(_fake_task(tmp_path / "b", group_by="case")[0], data, read_manifest(man))
    assert per_case["by_patient"] == [] and per_case["patient_check"].startswith("not applicable")
    # a file list has no hashes: content is checked only against files found under --pretrain-root
    lst = tmp_path / "file_list.txt"
    lst.write_text("copies/x.png\n", encoding="utf-8")
    (tmp_path / "pre" / "copies").mkdir(parents=True)
    (tmp_path / "pre" / "copies" / "x.png").write_bytes((data.root / "test/1234/slice_4.png").read_bytes())
    m = read_manifest(lst)
    assert audit_task(task, data, m)["content_check"].startswith("not possible")
    from lvmbench.audit import hash_listed

    f = audit_task(task, data, m, hash_listed(m, tmp_path / "pre"))
    assert [x["case"] for x in f["by_content"]] == ["test/1234/slice_4.png"]


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from lvmbench import cli

    monkeypatch.setattr(sys, "argv", ["lvmbench", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_audit_command_writes_report_and_leaderboard_footnotes_it(tmp_path, synth_root, monkeypatch, capsys):
    test_dir = synth_root / "BrainTumor" / "Testing" / "glioma_tumor"
    leaked = sorted(test_dir.glob("*.jpg"))[:3]
    man = tmp_path / "pretrain.json"
    entries = [{"path": f"/pre/BrainTumor/Testing/glioma_tumor/{p.name}", "sha256": _sha(p)} for p in leaked]
    entries.append({"path": "/pre/BrainTumor/Training/glioma_tumor/image(1).jpg", "sha256": "0" * 64})  # training file, same name
    man.write_text(json.dumps({"encoder": {"name": "resnet18"}, "output": {"encoder_sha256": "e" * 64}, "data": {"manifest": entries}}), encoding="utf-8")
    results = tmp_path / "results"
    code, _, err = _cli(monkeypatch, capsys, "audit", "--pretrain-manifest", str(man), "--suite", "smoke", "--tasks", "brain_tumor_linear,fgadr_linear", "--data-root", str(synth_root), "--results", str(results))
    assert code == 0, err
    assert "LEAK  brain_tumor_linear: 3/32 test cases" in err and "ok    fgadr_linear: 0/" in err
    (report,) = load_audits(results, "smoke")
    (bt,) = [t for t in report["tasks"] if t["task"] == "brain_tumor_linear"]
    assert bt["counts"] == {"name": 3, "content": 3, "patient": 0} and report["encoder"] == "resnet18@" + "e" * 12
    # results of the audited encoder on that task get the footnote; another encoder's do not
    labels = np.arange(8) % 4
    prob = np.eye(4)[labels]
    recs = [make_record(cls_records(labels, prob, [str(i) for i in range(8)]), "accuracy", sha=sha, task=t) for sha in ("e" * 64, "f" * 64) for t in ("brain_tumor_linear", "fgadr_linear")]
    write_records(results, recs)
    from lvmbench.leaderboard import build

    text = build(results, n_boot=200)
    assert "†1 Leakage audit of `pretrain`" in text and "3/32 test cases of brain_tumor_linear" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| resnet18")}
    assert rows["resnet18 @eeeeeeeeeeee"].count("†1") == 1 and "†" not in rows["resnet18 @ffffffffffff"]
    assert not list(results.rglob("*.lock")), "audit reports are not results"


def test_audit_without_encoder_marks_the_column(tmp_path, synth_root, monkeypatch, capsys):
    """An LVM-Med file list does not say which encoder trained on it: the column is footnoted."""
    from lvmbench.data.task_data import load_task_data
    from lvmbench.tasks import get_task

    spec = get_task("fgadr_linear").for_suite("smoke")
    test_files = sorted(c.image for c in load_task_data(spec, synth_root).split.test)
    lst = tmp_path / "lvm-med-training-data" / "FGADR" / "file_list.txt"
    lst.parent.mkdir(parents=True)
    lst.write_text("".join(f"FGADR/Seg-set/Original_Images/{Path(f).stem}.png\n" for f in test_files[:2]), encoding="utf-8")
    results = tmp_path / "results"
    code, _, err = _cli(monkeypatch, capsys, "audit", "--pretrain-manifest", str(lst.parent.parent), "--suite", "smoke", "--tasks", "fgadr_linear", "--data-root", str(synth_root), "--results", str(results))
    assert code == 0 and f"LEAK  fgadr_linear: 2/{len(test_files)}" in err
    labels = np.arange(8) % 4
    write_records(results, [make_record(cls_records(labels, np.eye(4)[labels], [str(i) for i in range(8)]), "accuracy", task="fgadr_linear")])
    from lvmbench.leaderboard import build

    text = build(results, n_boot=200)
    header = next(line for line in text.splitlines() if line.startswith("| encoder") and "fgadr_linear" in line)
    assert "fgadr_linear†1" in header  # the task's column of its family table
    assert "applies to the encoders pretrained on it (marked on the column)" in text
    assert "†" not in next(line for line in text.splitlines() if line.startswith("| resnet18"))
