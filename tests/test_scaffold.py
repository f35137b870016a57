"""``lvmbench task new``: a task folder written from the closest built-in task and what the data
folder shows, validated and verified; ``lvmbench task check`` for any task folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from builders import write_class_folders, write_fgadr
from cli_helpers import cli, the_line
from generic_data import write_derm, write_frames
from PIL import Image

from lvmbench.errors import UserError
from lvmbench.scaffold import new_task
from lvmbench.tasks import load_task_file


def _new(tmp_path: Path, task_id: str, family: str, data: Path) -> tuple[dict, list[str]]:
    lines: list[str] = []
    path = new_task(task_id, family, data, tmp_path / "tasks", log=lines.append)
    spec = load_task_file(path)
    assert spec.id == task_id and spec.suites == [task_id.replace("_", "-")]
    return yaml.safe_load(path.read_text(encoding="utf-8")), lines


def test_class_folders_with_split_folders(tmp_path):
    write_class_folders(tmp_path / "data" / "bt", n_train=6, n_test=3)
    raw, lines = _new(tmp_path, "bt_new", "classification", tmp_path / "data" / "bt")
    assert raw["data"] == {"reader": "class_folders", "dir": "bt", "options": {"splits": ["Testing", "Training"]}}
    assert raw["classes"] == ["a", "b"] and raw["split"]["source"] == "publisher" and raw["split"]["map"] == {"Testing": "test", "Training": "train"}
    assert raw["protocols"]["linear"]["lrs"] == [0.0005]  # brain_tumor_linear's paper value
    assert any(ln.startswith("bt_new:") and "18 cases" in ln for ln in lines), lines
    assert any("export LVMBENCH_TASK_PATH=" in ln for ln in lines) and any("left to fill in" in ln for ln in lines)
    assert "# Left to fill in or check:" in (tmp_path / "tasks" / "bt_new" / "task.yaml").read_text(encoding="utf-8")


def test_manifest_columns_are_found(tmp_path):
    write_derm(tmp_path / "data" / "derm", lesions=9)
    raw, lines = _new(tmp_path, "derm_new", "classification", tmp_path / "data" / "derm")
    opts = raw["data"]["options"]
    assert raw["data"]["reader"] == "manifest" and opts["image"] == "images_part_*/{image_id}.png" and opts["label"] == "dx"
    assert opts["group"] == {"column": "lesion_id"} and opts["split"] == "split" and raw["split"]["group_by"] == "patient"
    assert raw["classes"] == ["bkl", "mel", "nv"]
    assert not any("ERROR" in ln for ln in lines), lines


def test_a_table_without_header_row(tmp_path):
    write_fgadr(tmp_path / "data" / "fg", n=15)  # name,grade lines, no header
    raw, lines = _new(tmp_path, "fg_new", "classification", tmp_path / "data" / "fg")
    assert raw["data"]["options"] == {"table": "DR_Seg_Grading_Label.csv", "header": False, "image": "Original_Images/{col1}", "label": "col2"}
    assert raw["classes"] == ["0", "1", "2", "3", "4"] and any("15 cases" in ln for ln in lines), lines


def test_segmentation_pairs_found_even_when_folder_names_lie(tmp_path):
    write_frames(tmp_path / "data" / "polyp", sequences=2, per_seq=4, image_dir="masks", mask_dir="images")  # names swapped
    raw, lines = _new(tmp_path, "polyp_new", "segmentation", tmp_path / "data" / "polyp")
    assert raw["data"]["reader"] == "paired_images"
    assert raw["data"]["options"]["images"] == "masks/*.png" and raw["data"]["options"]["masks"] == "images/{stem}.png"
    assert raw["classes"] == ["background", "foreground"] and raw["primary_metric"] == "dice"
    assert any("holds the masks" in ln for ln in lines) and not any("ERROR" in ln or "warning" in ln for ln in lines), lines


def test_detection_from_coco_and_from_a_box_table(tmp_path):
    root = tmp_path / "data" / "cells"
    (root / "img").mkdir(parents=True)
    images, anns = [], []
    for i in range(8):
        Image.fromarray(np.full((32, 32, 3), 40, np.uint8)).save(root / "img" / f"c{i}.png")
        images.append({"id": i, "file_name": f"c{i}.png", "height": 32, "width": 32})
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [4, 4, 10, 12], "iscrowd": 0})
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "wbc"}, {"id": 2, "name": "rbc"}]}), encoding="utf-8")
    raw, _ = _new(tmp_path, "cells_coco", "detection", root)
    assert raw["data"] == {"reader": "coco", "dir": "cells", "options": {"annotations": "ann.json", "images": "img"}} and raw["classes"] == ["wbc", "rbc"]
    (root / "ann.json").unlink()
    (root / "boxes.csv").write_text("image,label,xmin,ymin,xmax,ymax\n" + "".join(f"c{i}.png,{'wbc' if i % 2 else 'rbc'},4,4,14,16\n" for i in range(8)), encoding="utf-8")
    raw, _ = _new(tmp_path, "cells_csv", "detection", root)
    assert raw["data"]["reader"] == "csv_boxes" and raw["data"]["options"]["image"] == "img/{image}" and raw["classes"] == ["rbc", "wbc"]


def test_never_overwrites_and_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    write_class_folders(tmp_path / "data" / "bt", n_train=2, n_test=1)
    path = new_task("bt_twice", "classification", tmp_path / "data" / "bt", tmp_path / "tasks", log=lambda s: None)
    before = path.read_text(encoding="utf-8")
    with pytest.raises(UserError, match="already exists here; nothing written"):
        new_task("bt_twice", "classification", tmp_path / "data" / "bt", tmp_path / "tasks", log=lambda s: None)
    assert path.read_text(encoding="utf-8") == before
    code, _, err = cli(monkeypatch, capsys, "task", "new", "x_y", "--family", "regression", "--from", str(tmp_path / "data" / "bt"), "--out", str(tmp_path / "t2"))
    assert code == 2 and "family 'regression' is not one of" in the_line(err, "regression")
    code, _, err = cli(monkeypatch, capsys, "task", "new", "x_y", "--famly", "segmentation")
    line = the_line(err, "--famly")
    assert code == 2 and line.startswith("error: lvmbench task new: No such option: --famly") and "--family" in line and "fix: see `lvmbench task new --help`" in line


def test_task_check_validates_an_out_of_tree_folder_and_its_data(tmp_path, monkeypatch, capsys):
    write_frames(tmp_path / "data" / "polyp", sequences=2, per_seq=4)
    new_task("polyp_chk", "segmentation", tmp_path / "data" / "polyp", tmp_path / "tasks", verify=False, log=lambda s: None)
    code, out, _ = cli(monkeypatch, capsys, "task", "check", str(tmp_path / "tasks" / "polyp_chk"), "--data-root", str(tmp_path / "data"))
    assert code == 0 and "ok    " in out and "polyp_chk: " in out and "8 cases" in out, out
    y = tmp_path / "tasks" / "polyp_chk" / "task.yaml"
    y.write_text(y.read_text(encoding="utf-8").replace("primary_metric: dice", "primary_metric: dise").replace("suites: [polyp-chk]", "suites: [lvmmed]"), encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "task", "check", str(y))
    line = the_line(err, "dise")
    assert code == 2 and "primary_metric 'dise'" in line and "did you mean 'dice'?" in line and str(y) in line
    y.write_text(y.read_text(encoding="utf-8").replace("primary_metric: dise", "primary_metric: dice"), encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "task", "check", str(y))
    assert code == 2 and "may not join suite 'lvmmed'" in the_line(err, "lvmmed")


def test_reported_rows_state_their_unit_and_metric_names_are_checked(tmp_path):
    from lvmbench.spec import ReportedRow

    pct = ReportedRow(encoder="x", protocol="linear", value=76.8, std=1.2, source="paper")
    frac = ReportedRow(encoder="x", protocol="linear", value=0.768, std=0.012, unit="fraction", metric="auc", source="paper")
    assert pct.percent_value == 76.8 and frac.percent_value == pytest.approx(76.8) and frac.percent_std == pytest.approx(1.2)
    with pytest.raises(ValueError, match="not a fraction"):
        ReportedRow(encoder="x", protocol="linear", value=76.8, unit="fraction", source="paper")
    write_class_folders(tmp_path / "data" / "bt", n_train=2, n_test=1)
    path = new_task("bt_rep", "classification", tmp_path / "data" / "bt", tmp_path / "tasks", verify=False, log=lambda s: None)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["reported"] = [{"encoder": "DermNet R50", "protocol": "linear", "value": 0.81, "unit": "fraction", "metric": "balanced_accuracy", "source": "a paper"}]
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_task_file(path).reported[0].percent_value == pytest.approx(81.0)
    raw["reported"][0]["metric"] = "balanced_acc"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(UserError, match=r"reported\[0\].metric 'balanced_acc'.*did you mean 'balanced_accuracy'"):
        load_task_file(path)
    raw["reported"][0].update(metric="auc", protocol="linaer")
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(UserError, match=r"reported\[0\].protocol 'linaer'.*did you mean 'linear'"):
        load_task_file(path)
