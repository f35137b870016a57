"""Task authoring edges (issue 28 item 3): ``task new`` on a table with legend/footer rows and on one
folder per case, a class no split part has, ``split.group_by`` naming what the group source declares,
task-file errors that point at task.yaml keys, ``data verify --cache-dir``, the suites in ``eval
--help``, smoke writing only the synthetic data it runs on, and a duplicate-image warning that
suggests an option the reader has."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_helpers import cli, the_line
from generic_data import write_case_folders, write_derm

from lvmbench.scaffold import new_task
from lvmbench.tasks import load_task_file


def _new(tmp_path: Path, task_id: str, family: str, data: Path) -> tuple[dict, list[str]]:
    lines: list[str] = []
    path = new_task(task_id, family, data, tmp_path / "tasks", log=lines.append)
    load_task_file(path)
    return yaml.safe_load(path.read_text(encoding="utf-8")), lines


def test_task_new_leaves_out_legend_and_footer_rows_and_says_so(tmp_path):
    root = write_derm(tmp_path / "data" / "derm", lesions=9)
    with open(root / "metadata.csv", "a", encoding="utf-8") as f:  # notes under the table, as spreadsheets export them
        f.write(",,,\n")
        f.write('Legend: dx codes,,"nv = nevus, mel = melanoma, bkl = keratosis",\n')
        f.write(',,"Nodules, Streaks, Regr",\n')
        f.write("Source: clinic export 2021,,,\n")
    raw, lines = _new(tmp_path, "derm_legend", "classification", root)
    assert raw["classes"] == ["bkl", "mel", "nv"]  # not 'ules, Streaks, Regr'
    opts = raw["data"]["options"]
    assert set(opts["skip_labels"]) == {"", "nv = nevus, mel = melanoma, bkl = keratosis", "Nodules, Streaks, Regr"}
    assert opts["split"] == "split"  # the legend rows' empty split cells do not hide the split column
    line = the_line("\n".join(lines), "legend/footer")
    assert "4 legend/footer row(s)" in line and "skip_labels" in line
    assert not any("ERROR" in ln for ln in lines), lines
    assert any("18 cases" in ln for ln in lines), lines


@pytest.mark.parametrize("variant", ["fixed", "named", "subfolders", "volumes"])
def test_task_new_infers_one_folder_per_case(tmp_path, variant):
    root = write_case_folders(tmp_path / "data" / f"cases_{variant}", variant, n=8)
    raw, lines = _new(tmp_path, f"cases_{variant}", "segmentation", root)
    opts = raw["data"]["options"]
    want = {
        "fixed": ("paired_images", "*/image.png", "{case}/mask.png"),
        "named": ("paired_images", "*/*.png", "{case}/{case}_mask.png"),
        "subfolders": ("paired_images", "*/images/*.png", "{case}/masks/*.png"),
        "volumes": ("nifti_pairs", "*/imaging.nii.gz", "{case}/segmentation.nii.gz"),
    }[variant]
    assert (raw["data"]["reader"], opts["images"], opts.get("masks", opts.get("label"))) == want
    assert opts["id"] == "{case}" and raw["classes"] == ["background", "foreground"]
    assert any("one folder per case" in ln for ln in lines), lines
    assert not any("ERROR" in ln or "warning" in ln.lower() for ln in lines), lines  # no mask read as a stray image
    assert any("8 cases" in ln for ln in lines), lines


def test_image_and_mask_folders_are_still_paired_as_before(tmp_path):
    from generic_data import write_frames

    root = write_frames(tmp_path / "data" / "polyp", sequences=3, per_seq=3)
    raw, _ = _new(tmp_path, "polyp_pairs", "segmentation", root)
    assert raw["data"]["options"]["images"] == "frames/*.png" and raw["data"]["options"]["masks"] == "labels/{stem}.png"


def test_task_file_errors_point_at_task_yaml_keys(tmp_path, monkeypatch, capsys):
    text = (Path(__file__).resolve().parents[1] / "tasks" / "kvasir_seg" / "task.yaml").read_text(encoding="utf-8")
    folder = tmp_path / "edited"
    folder.mkdir()
    (folder / "task.yaml").write_text(text.replace("id: kvasir_seg", "id: edited").replace("split:\n", "split:\n  group_bi: patient\n", 1), encoding="utf-8")
    code, out, err = cli(monkeypatch, capsys, "task", "check", str(folder))
    line = the_line(out + err, "group_bi")
    assert code != 0 and "spec.py" not in line and "lvmbench/" not in line.split("task.yaml")[-1]
    assert "did you mean 'group_by'" in line and "split" in line


# -- split.group_by: any name the group source declares ------------------------------------------


def _verify(tmp_path: Path, text: str, data_root: Path):
    from generic_data import write_task

    from lvmbench.data.verify import verify_task

    spec = load_task_file(write_task(tmp_path / "tasks", text))
    return verify_task(spec, data_root, progress=False)


def test_group_by_takes_the_name_the_group_source_declares(tmp_path):
    from generic_data import POLYP_TASK, write_frames

    write_frames(tmp_path / "data" / "polyp")
    seq = POLYP_TASK.replace("group_by: patient", "group_by: sequence")
    report = _verify(tmp_path, seq, tmp_path / "data")  # ranges declare no name
    issue = next(i for i in report.fatal if "group_by" in i.problem)
    assert "'sequence'" in issue.problem and "data.options.group" in issue.problem and "name: sequence" in issue.fix
    assert "spec.py" not in issue.line() and "lvmbench/" not in issue.fix
    named = seq.replace("      input: \"{stem}\"\n", "      input: \"{stem}\"\n      name: sequence\n").replace("id: polyp_seq", "id: polyp_named")
    report = _verify(tmp_path, named, tmp_path / "data")
    assert report.runnable and report.split_counts, [i.line() for i in report.fatal]
    # a template names its groups by its field: {sequence} from a named group of the pattern
    tpl = seq.replace("id: polyp_seq", "id: polyp_tpl").replace(
        "    group:\n      input: \"{stem}\"\n      ranges:\n        - {from: 1, to: 6, group: seq1}\n        - {from: 7, to: 12, group: seq2}\n"
        "        - {from: 13, to: 18, group: seq3}\n        - {from: 19, to: 24, group: seq4}\n",
        "    pattern: 'frames/(?P<sequence>\\d)\\d*\\.png'\n    group: \"{sequence}\"\n")
    assert "group: \"{sequence}\"" in tpl
    report = _verify(tmp_path, tpl, tmp_path / "data")
    assert not [i for i in report.fatal if "group_by" in i.problem], [i.line() for i in report.fatal]


def test_group_by_must_be_a_word_and_the_error_names_the_key(tmp_path, monkeypatch, capsys):
    from generic_data import POLYP_TASK, write_task

    path = write_task(tmp_path / "tasks", POLYP_TASK.replace("group_by: patient", "group_by: 'video sequence'"))
    code, out, err = cli(monkeypatch, capsys, "task", "check", str(path.parent))
    line = the_line(out + err, "split.group_by")
    assert code != 0 and "lower-case word" in line and "spec.py" not in line


# -- a class with no case in a split part ----------------------------------------------------------


def test_a_class_without_cases_is_an_error_at_verify_and_before_a_run(tmp_path, monkeypatch, capsys):
    from generic_data import DERM_TASK

    root = write_derm(tmp_path / "data" / "derm", lesions=12)
    with open(root / "metadata.csv", "a", encoding="utf-8") as f:
        f.write(',,"ules, Streaks, Regr",\n,,,\n')
    # the state verify's own earlier fix left: the legend value taken for a class, empty labels skipped
    text = DERM_TASK.replace("classes: [nevus, melanoma, keratosis]", "classes: [nevus, melanoma, keratosis, 'ules, Streaks, Regr']")
    text = text.replace("    split: split\n", "    split: split\n    skip_labels: ['']\n")
    report = _verify(tmp_path, text, tmp_path / "data")
    issue = next(i for i in report.fatal if "no case" in i.problem)
    assert "'ules, Streaks, Regr'" in issue.problem and "remove them from the task's classes" in issue.fix
    # the pre-run check stops `eval` with the same line, before any unit trains
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tmp_path / "tasks"))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))
    from lvmbench.tasks import TASKS

    TASKS.reset()
    try:
        code, out, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--suite", "derm-extra", "--tasks", "derm_dx", "--protocol", "knn",
                             "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress")
    finally:
        TASKS.reset()
    assert code != 0 and "ules, Streaks, Regr" in the_line(out + err, "no case in any split part")
    assert not list((tmp_path / "r").rglob("*.json"))


def test_a_class_missing_from_one_split_part_is_named_with_the_part(tmp_path):
    from generic_data import DERM_TASK

    root = write_derm(tmp_path / "data" / "derm", lesions=12)
    rows = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
    # every keratosis lesion goes to train: the test part has none
    rows = [r.replace(",test", ",train") if ",bkl," in r else r for r in rows]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = _verify(tmp_path, DERM_TASK, tmp_path / "data")
    issue = next(i for i in report.warnings if "no case of class 'keratosis' in the test part" in i.problem)
    assert "stratify" in issue.fix and report.runnable
    # none in train: it cannot be learnt, an error
    rows = [r.replace(",train", ",test") if ",bkl," in r else r for r in rows]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = _verify(tmp_path, DERM_TASK.replace("id: derm_dx", "id: derm_dx2"), tmp_path / "data")
    assert any("'keratosis' in the train part" in i.problem for i in report.fatal), [i.line() for i in report.issues]


# -- smoke writes only what it runs; data verify --cache-dir -------------------------------------


def _datasets(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_smoke_writes_only_the_synthetic_data_of_the_selected_tasks(tmp_path):
    from lvmbench.runner import EvalRequest, resolve_data_root

    def root_for(tasks, cache):
        return resolve_data_root(EvalRequest(encoder="resnet18", suite="smoke", tasks=tasks, cache_dir=tmp_path / cache))

    assert _datasets(root_for(["kvasir_seg"], "a")) == ["Kvasir-SEG"]  # not 15 datasets
    assert _datasets(root_for(["drive_chase_ood"], "b")) == ["CHASE_DB1", "DRIVE"]  # its out-of-distribution set too
    # a subset is the same data a full write gives (seeded by the dataset's place among all writers)
    from lvmbench.data.synth import write_all

    write_all(tmp_path / "full", ["DRIVE", "Kvasir-SEG"])
    for name in ("Kvasir-SEG", "DRIVE"):
        src = root_for(["kvasir_seg"], "a") if name == "Kvasir-SEG" else root_for(["drive_chase_ood"], "b")
        a = sorted(p.relative_to(src / name) for p in (src / name).rglob("*") if p.is_file() and p.name != ".complete")
        assert a and all((src / name / f).read_bytes() == (tmp_path / "full" / name / f).read_bytes() for f in a)


def test_data_verify_cache_dir_holds_smoke_data_and_remembers_the_checked_files(tmp_path, monkeypatch, capsys):
    from lvmbench.data import verify as verify_mod

    cache = tmp_path / "cache"
    code, out, err = cli(monkeypatch, capsys, "data", "verify", "kvasir_seg", "--suite", "smoke", "--cache-dir", str(cache), "--no-progress")
    assert code == 0 and "ready" in out, out + err
    (synth,) = cache.glob("synth-v*")
    assert _datasets(synth) == ["Kvasir-SEG"] and list((cache / "verified").glob("*.json"))
    # eval's pre-run check on the same cache decodes none of the files verify checked
    from lvmbench.data.task_data import load_task_data
    from lvmbench.tasks import get_task

    spec = get_task("kvasir_seg").for_suite("smoke")
    decoded: list[str] = []
    real = verify_mod.check_case
    monkeypatch.setattr(verify_mod, "check_case", lambda reader, case, classes: decoded.append(case.id) or real(reader, case, classes))
    verify_mod.preflight(load_task_data(spec, synth, suite="smoke"), cache, log=lambda s: None)
    assert decoded == []
    code, out, err = cli(monkeypatch, capsys, "data", "verify", "kvasir_seg", "--suite", "smoke", "--cache-dir", str(tmp_path / "f" / "x"), "--no-progress")
    assert code == 0  # a new folder is created


def test_the_duplicate_warning_suggests_an_option_the_reader_has(tmp_path):
    import numpy as np

    from lvmbench.data.split_checks import duplicate_fix
    from lvmbench.tasks import get_task

    fix = duplicate_fix(get_task("retinamnist_linear"))
    assert "group_identical" not in fix and "publisher's split" in fix and "remove the copies" in fix
    assert "group_identical: pixels" in duplicate_fix(get_task("brain_tumor_linear"))
    from generic_data import DERM_TASK, spec_of

    assert "data.options.group" in duplicate_fix(spec_of(DERM_TASK))
    # end to end: a MedMNIST file whose test images copy training images
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (30, 8, 8), dtype=np.uint8)
    labels = (np.arange(30) % 2)[:, None]
    (tmp_path / "data" / "mm").mkdir(parents=True)
    np.savez(tmp_path / "data" / "mm" / "tiny.npz", train_images=imgs[:20], train_labels=labels[:20], val_images=imgs[20:25], val_labels=labels[20:25],
             test_images=np.concatenate([imgs[:3], imgs[25:27]]), test_labels=np.concatenate([labels[:3], labels[25:27]]))
    text = MM_TASK.replace("file: breastmnist.npz", "file: tiny.npz").replace("dir: medmnist", "dir: mm")
    report = _verify(tmp_path, text, tmp_path / "data")
    dup = [i for i in report.warnings if "identical image" in i.problem]
    assert len(dup) == 3 and all("group_identical" not in i.fix and "medmnist" in i.fix for i in dup)


MM_TASK = """\
id: breast_mm
title: BreastMNIST (MedMNIST v2), ResNet-18 from scratch as in the paper's table
family: classification
modality: ultrasound
classes: [malignant, normal_benign]
data: {reader: medmnist, dir: medmnist, options: {file: breastmnist.npz}}
split: {source: publisher, map: {train: train, val: val, test: test}, group_by: case}
preprocess: {size: 28, channels: 1, intensity: unit}
protocols:
  finetune: {epochs: 2, batch_size: 128, lr: 0.001}
primary_metric: auc
metrics: [auc, accuracy]
suites: [medmnist-v2]
"""
