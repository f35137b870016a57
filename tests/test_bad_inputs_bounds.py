"""Bad inputs, round 3: readers stay bounded and inside the dataset folder, task files cannot hang.

- a link loop (``x -> .``) in a manifest's image folder or under a ``**`` glob ends (it exhausted
  memory); a link the user placed to data kept elsewhere is still followed (the documented opt-in);
- every data option path stays inside the dataset folder (``images: /`` walked the filesystem);
  COCO ``file_name`` and VOC ``<filename>`` cannot lead out of it;
- a table header naming a column twice is refused (pandas renamed the copy to ``label.1``);
- a ``task.yaml`` that is a FIFO (or a folder, a socket) is a broken task with one line (it hung
  ``lvmbench tasks``), and every task-file error has a fix.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import cli, the_line
from generic_data import DERM_TASK, write_derm, write_frames, write_rows, write_task

from lvmbench.data.cases import make_reader
from lvmbench.data.readers.tables import FileIndex
from lvmbench.data.synth.detection import write_voc
from lvmbench.errors import DataError, UserError

DERM = {"table": "metadata.csv", "image": "images_part_*/{image_id}.png", "label": "dx", "label_map": {"nv": "nevus", "mel": "melanoma", "bkl": "keratosis"}, "classes": ["nevus", "melanoma", "keratosis"]}
BCCD = ["WBC", "RBC", "Platelets"]

# Reads the cases in a child with a memory cap and a deadline: the old walk never ended.
_COUNT = """
import resource, sys, json
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from lvmbench.data.cases import make_reader
print(len(make_reader(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])).cases()))
"""


def _count_in_child(reader: str, root: Path, options: dict) -> int:
    try:
        r = subprocess.run([sys.executable, "-c", _COUNT, reader, str(root), json.dumps(options)], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{reader}: reading a folder with a link loop did not end in 90 s")
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("reader", ["manifest", "paired_images"])
def test_link_loops_in_an_image_folder_end(tmp_path, reader):
    if reader == "manifest":
        root, folder, options, want = write_derm(tmp_path / "derm", lesions=6), "images_part_1", DERM, 12
    else:
        root, folder, options, want = write_frames(tmp_path / "polyp"), "frames", {"images": "frames/**/*.png", "masks": "labels/{stem}.png", "id": "{stem}"}, 24
    (root / folder / "x").symlink_to(".")
    (root / folder / "y").symlink_to(".")
    (root / folder / "up").symlink_to("..")
    assert _count_in_child(reader, root, options) == want


def test_a_link_to_data_kept_elsewhere_is_followed_once(tmp_path):
    root = write_derm(tmp_path / "derm", lesions=6)
    elsewhere = tmp_path / "big_disk" / "part2"
    elsewhere.parent.mkdir()
    (root / "images_part_2").rename(elsewhere)
    (root / "images_part_2").symlink_to(elsewhere)  # the opt-in: a link the user placed in the dataset folder
    (root / "images_part_1" / "alias").symlink_to("../images_part_1")  # a second name for a folder already listed
    index = FileIndex(root, (".png",))
    assert len(index.files) == 13 and not any(f.startswith("images_part_1/alias/") for f in index.files)  # 12 images + the table
    assert len(make_reader("manifest", root, DERM).cases()) == 12


@pytest.mark.parametrize(
    "reader, options, key",
    [
        ("manifest", {**DERM, "images": "/"}, "images"),
        ("manifest", {**DERM, "table": "../metadata.csv"}, "table"),
        ("manifest", {**DERM, "group": {"file": "/etc/group_map.csv", "key": "image_id", "value": "g"}}, "group.file"),
        ("paired_images", {"images": "/etc/*", "masks": "labels/{stem}.png"}, "images"),
        ("paired_images", {"images": "frames/*.png", "masks": "frames/../../labels/{stem}.png"}, "masks"),
        ("paired_images", {"images": "frames/*.png", "masks": [{"path": "/masks/{stem}.png", "label": 1}]}, "masks"),
        ("class_folders", {"splits": ["../Training"], "classes": ["a", "b"]}, "splits"),
        ("coco", {"annotations": {"train": "/etc/train.json"}, "classes": BCCD}, "annotations"),
        ("coco", {"images": "..", "classes": BCCD}, "images"),
        ("voc", {"annotations": "C:\\VOC\\Annotations", "classes": BCCD}, "annotations"),
        ("medmnist", {"file": "../retinamnist.npz"}, "file"),
        ("nifti_pairs", {"images": "../ct/*.nii.gz", "label": "seg/{stem}.nii.gz"}, "images"),
    ],
)
def test_data_option_paths_stay_inside_the_dataset_folder(tmp_path, reader, options, key):
    with pytest.raises(UserError) as e:
        make_reader(reader, tmp_path, options)
    line = str(e.value)
    assert f"data.options.{key}" in line and "points outside the dataset folder" in line and "ln -s" in line and "\n" not in line, line


def test_task_check_names_the_task_file_and_the_option(monkeypatch, capsys, tmp_path):
    task = write_task(tmp_path / "tasks", DERM_TASK.replace("    table: metadata.csv\n", "    table: metadata.csv\n    images: /\n"))
    code, _, err = cli(monkeypatch, capsys, "task", "check", str(task.parent))
    line = the_line(err, "points outside the dataset folder")
    assert code == 2 and str(task) in line and "data.options.images" in line and "(got '/')" in line and "fix: " in line


def _voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    write_voc(root, np.random.default_rng(0), n=6, h=32, w=32)
    return root


def test_coco_file_name_cannot_lead_out_of_the_dataset_folder(tmp_path):
    root = _voc(tmp_path)
    (tmp_path / "secret.jpg").write_bytes((root / "JPEGImages" / "BloodImage_00000.jpg").read_bytes())
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(BCCD)]
    for bad in ("../secret.jpg", str(tmp_path / "secret.jpg")):
        (root / "ann.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "JPEGImages/BloodImage_00000.jpg"}, {"id": 2, "file_name": bad}], "annotations": [], "categories": cats}), encoding="utf-8")
        with pytest.raises(DataError) as e:
            make_reader("coco", root, {"annotations": "ann.json", "classes": BCCD}).cases()
        line = str(e.value)
        assert line.startswith(f"{root / 'ann.json'}:") and f"file_name '{bad}' points outside the dataset folder" in line and "fix: " in line, line


def test_voc_filename_cannot_lead_out_of_the_image_folder(tmp_path):
    root = _voc(tmp_path)
    (tmp_path / "secret.jpg").write_bytes((root / "JPEGImages" / "BloodImage_00000.jpg").read_bytes())
    xml = root / "Annotations" / "BloodImage_00001.xml"
    for bad in ("../../secret.jpg", str(tmp_path / "secret.jpg")):
        xml.write_text(f"<annotation><filename>{bad}</filename><object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>", encoding="utf-8")
        with pytest.raises(DataError) as e:
            make_reader("voc", root, {"classes": BCCD}).cases()
        line = str(e.value)
        assert line.startswith(f"{xml}:") and f"<filename> '{bad}' points outside the dataset folder" in line and "fix: " in line, line


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_header_naming_a_column_twice_is_refused(tmp_path, suffix):
    root = write_derm(tmp_path / "derm", lesions=6)
    table = root / f"dup{suffix}"
    if suffix == ".csv":
        text = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
        table.write_text("\n".join([text[0] + ",dx"] + [ln + ",nv" for ln in text[1:]]) + "\n", encoding="utf-8")  # a second 'dx': every row a nevus
    else:
        import pandas as pd

        frame = pd.read_csv(root / "metadata.csv", dtype=str)
        frame.insert(len(frame.columns), "dx ", "nv")  # the same name once stripped
        frame.to_excel(table, index=False)
    with pytest.raises(DataError) as e:
        make_reader("manifest", root, {**DERM, "table": table.name}).cases()
    line = str(e.value)
    assert line.startswith(f"{table}:") and "the header names column(s) 'dx' more than once" in line and "fix: " in line, line


def test_a_headerless_or_well_formed_table_still_reads(tmp_path):
    root = write_derm(tmp_path / "derm", lesions=6)
    assert len(make_reader("manifest", root, DERM).cases()) == 12
    write_rows(root / "plain.csv", [{"image_id": "ISIC_00000", "dx": "nv", "": "x"}])  # an empty header cell keeps a name
    from lvmbench.data.readers.tables import read_table

    t = read_table(root / "plain.csv")
    assert t.columns == ["image_id", "dx", "Unnamed: 2"] and t.rows == [{"image_id": "ISIC_00000", "dx": "nv", "Unnamed: 2": "x"}]


# -- task files that are not regular files ---------------------------------------------------------


def _special(folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "task.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    return path


def test_a_fifo_named_task_yaml_does_not_hang_lvmbench_tasks(tmp_path):
    tasks = tmp_path / "tasks"
    _special(tasks / "piped", "fifo")
    write_task(tasks, DERM_TASK)  # a good task beside it is still listed
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(tasks)}
    try:
        r = subprocess.run([sys.executable, "-m", "lvmbench.cli", "tasks"], capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("lvmbench tasks hung on a FIFO named task.yaml")
    assert r.returncode == 2 and "derm_dx" in r.stdout, r.stderr
    line = the_line(r.stderr, "piped")
    assert "task 'piped' is broken" in line and "not a regular file (it is a FIFO)" in line and "fix: make task.yaml a readable regular file" in line


@pytest.mark.parametrize("kind, what", [("fifo", "a FIFO"), ("folder", "a folder"), ("socket", "a socket")])
def test_task_check_on_a_task_yaml_that_is_not_a_file_is_one_line_with_a_fix(monkeypatch, capsys, tmp_path, kind, what):
    path = _special(tmp_path / "odd", kind)
    code, _, err = cli(monkeypatch, capsys, "task", "check", str(path.parent))
    line = the_line(err, str(path))
    assert code == 2 and f"not a regular file (it is {what})" in line
    assert line.split("; fix: ", 1)[1].strip(), line  # a real fix, never an empty one


@pytest.mark.parametrize(
    "text, needle",
    [
        ("- just\n- a list\n", "not a YAML mapping"),
        ("id: [unclosed\n", "cannot read task file"),
        (DERM_TASK.replace("id: derm_dx", "id: other_name"), "differs from its folder name"),
    ],
)
def test_every_task_file_error_has_a_fix(monkeypatch, capsys, tmp_path, text, needle):
    folder = tmp_path / "derm_dx"
    folder.mkdir()
    (folder / "task.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "task", "check", str(folder))
    line = the_line(err, needle)
    assert code == 2 and "; fix: " in line and line.split("; fix: ", 1)[1].strip(), line
