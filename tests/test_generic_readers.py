"""Generic readers configured in task.yaml: manifest tables, group sources, paired files whose folder
names lie, 3D volumes through SimpleITK, boxes from a table, TIFFs only tifffile decodes, typed
reader options. Every bad input is one line naming the file (and row) and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from generic_data import DERM_TASK, POLYP_TASK, spec_of, write_derm, write_frames, write_rows, write_task
from PIL import Image

from lvmbench.data.cases import READERS, make_reader
from lvmbench.data.data_commands import report_lines
from lvmbench.data.reader_options import options_model
from lvmbench.data.task_data import limit_cases, load_task_data
from lvmbench.data.verify import verify_task
from lvmbench.errors import DataError, UserError
from lvmbench.tasks import load_task_file

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread

DERM = {"table": "metadata.csv", "image": "images_part_*/{image_id}.png", "label": "dx", "label_map": {"nv": "nevus", "mel": "melanoma", "bkl": "keratosis"}, "classes": ["nevus", "melanoma", "keratosis"]}


# -- manifest tables ----------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["metadata.csv", "metadata.tsv", "metadata.xlsx"])
def test_manifest_reads_labels_groups_and_split_from_a_table(tmp_path, table):
    root = write_derm(tmp_path / "derm", lesions=6, table=table)
    r = make_reader("manifest", root, {**DERM, "table": table, "group": {"column": "lesion_id"}, "split": "split"})
    cases = r.cases()
    assert len(cases) == 12 and r.dataset_checks(cases) == []
    by_id = {Path(c.image).stem: c for c in cases}
    assert by_id["ISIC_00000"].image == "images_part_1/ISIC_00000.png" and by_id["ISIC_00001"].image == "images_part_2/ISIC_00001.png"
    assert [by_id[f"ISIC_{i:05d}"].label for i in range(0, 12, 2)] == [0, 1, 2, 0, 1, 2]  # nevus, melanoma, keratosis in turn
    assert by_id["ISIC_00000"].group == by_id["ISIC_00001"].group == "HAM_0000" != by_id["ISIC_00002"].group
    assert by_id["ISIC_00006"].meta["split"] == "test" and by_id["ISIC_00000"].meta["split"] == "train"
    assert r.load_image(cases[0]).shape == (20, 20, 3)


def test_manifest_integer_labels_several_images_per_row_and_one_hot(tmp_path):
    root = write_derm(tmp_path / "d", lesions=3)
    rows = [{"left": f"images_part_1/ISIC_{2 * i:05d}.png", "right": f"images_part_2/ISIC_{2 * i + 1:05d}.png" if i != 1 else "", "grade": str(i), "A": str(int(i == 0)), "B": str(int(i == 1)), "C": str(int(i == 2))} for i in range(3)]
    write_rows(root / "eyes.csv", rows)
    r = make_reader("manifest", root, {"table": "eyes.csv", "image": ["left", "right"], "label": "grade", "classes": ["g0", "g1", "g2"]})
    cases = r.cases()
    assert [c.label for c in cases] == [0, 0, 1, 2, 2]  # row 2 has no right image: one case
    assert cases[0].group == cases[1].group == "row2" and cases[2].group == "row3"  # one row = one group
    hot = make_reader("manifest", root, {"table": "eyes.csv", "image": "left", "label_columns": ["A", "B", "C"], "classes": ["a", "b", "c"]}).cases()
    assert [c.label for c in hot] == [0, 1, 2]


def test_manifest_bad_rows_each_one_line(tmp_path):
    root = write_derm(tmp_path / "derm", lesions=6)
    text = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
    for row in (3, 5):  # rows 4 and 6: one unknown label (a typo): one line for both
        cells = text[row].split(",")
        text[row] = ",".join([*cells[:2], "nvv", *cells[3:]])
    text.append(text[1])  # row 14: a duplicate of row 2
    text.append("HAM_9999,ISIC_99999,nv,train")  # row 15: no such image
    (root / "metadata.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    tasks = tmp_path / "tasks"
    spec = load_task_file(write_task(tasks, DERM_TASK))
    report = verify_task(spec, tmp_path, progress=False)
    lines = "\n".join(report_lines(report))
    unknown = [i for i in report.fatal if "nvv" in i.problem]
    assert len(unknown) == 1 and "row 4, row 6" in unknown[0].problem and "did you mean 'nv'?" in unknown[0].problem, lines
    dup = [i for i in report.fatal if "listed twice" in i.problem]
    assert len(dup) == 1 and "row 2 and row 14" in dup[0].problem, lines
    missing = [i for i in report.warnings if "image is missing" in i.problem]
    assert len(missing) == 1 and "row 15" in missing[0].problem and missing[0].path.endswith("ISIC_99999.png"), lines
    assert not report.runnable and all("\n" not in ln for ln in report_lines(report))


def test_manifest_missing_column_and_table_are_one_line(tmp_path):
    root = write_derm(tmp_path / "derm", lesions=3)
    with pytest.raises(DataError, match="has no column 'diagnosis'.*columns: lesion_id, image_id, dx, split") as e:
        make_reader("manifest", root, {**DERM, "label": "diagnosis"}).cases()
    assert "metadata.csv" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="did you mean 'lesion_id'"):
        make_reader("manifest", root, {**DERM, "group": {"column": "lesionid"}}).cases()
    with pytest.raises(DataError, match="table not found"):
        make_reader("manifest", root, {**DERM, "table": "nope.csv"}).cases()


# -- typed reader options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit,words",
    [
        (lambda o: o.update(lable="dx"), ["unknown data option 'data.options.lable' for reader 'manifest'", "did you mean 'label'?"]),
        (lambda o: o["group"].update(colum="lesion_id"), ["data.options.group.colum", "did you mean 'column'?"]),
        (lambda o: o.pop("table"), ["reader 'manifest' needs 'data.options.table'"]),
        (lambda o: o.update(missing="skip"), ["data.options.missing", "'warn' or 'error'"]),
        (lambda o: o.update(group={"ranges": [{"from": 5, "to": 1, "group": "a"}]}), ["data.options.group", "range from 5 to 1 is empty"]),
        (lambda o: o.update(group={"regex": "(", "input": "{stem}"}), ["data.options.group.regex", "invalid regular expression"]),
    ],
)
def test_a_bad_reader_option_is_one_line_naming_task_and_key(tmp_path, edit, words):
    raw = yaml.safe_load(DERM_TASK)
    edit(raw["data"]["options"])
    path = write_task(tmp_path / "tasks", yaml.safe_dump(raw))
    with pytest.raises(UserError) as e:
        load_task_file(path)
    line = str(e.value)
    assert "\n" not in line and str(path) in line and "task 'derm_dx'" in line, line
    for w in words:
        assert w in line, line


def test_every_reader_has_a_typed_model_and_its_example_validates():
    for name, cls in READERS.items():
        model = options_model(cls)
        assert model.model_config.get("extra") == "forbid", name
        example = cls.example if cls.example.get("reader") == name else {"options": {}}
        model.model_validate({**getattr(cls, "defaults", {}), **example.get("options", {})})


def test_lvmbench_readers_lists_options_defaults_and_examples():
    from lvmbench.data.readers_doc import readers_table

    text = readers_table()
    for name in READERS.names():
        assert f"## {name} (" in text
    one = readers_table("kvasir_seg")
    assert "a preset of paired_images" in one and "| threshold" in one and "| 128 " in one and "reader: kvasir_seg" in one
    assert "{ranges: [{from: 1, to: 25, group: seq01}" in text  # group sources documented once


# -- group sources ------------------------------------------------------------------------------


def _frames(tmp_path: Path, **options):
    root = write_frames(tmp_path / "polyp", sequences=4, per_seq=6)
    return make_reader("paired_images", root, {"images": "frames/*.png", "masks": "labels/{stem}.png", "id": "{stem}", "classes": ["bg", "polyp"], **options})


def brute_force_group(frame: int, ranges: list[tuple[int, int, str]]) -> str | None:
    return next((g for lo, hi, g in ranges if lo <= frame <= hi), None)


def test_numeric_ranges_group_frames_into_sequences(tmp_path):
    spans = [(1, 6, "seq1"), (7, 12, "seq2"), (13, 18, "seq3"), (19, 24, "seq4")]
    r = _frames(tmp_path, group={"ranges": [{"from": a, "to": b, "group": g} for a, b, g in spans]})
    cases = r.cases()
    assert len(cases) == 24 and r.dataset_checks(cases) == []
    for c in cases:
        assert c.group == brute_force_group(int(c.id), spans)
    (tmp_path / "polyp" / "sequences.csv").write_text("from,to,group\n" + "\n".join(f"{a},{b},{g}" for a, b, g in spans) + "\n", encoding="utf-8")
    from_file = _frames(tmp_path, group={"ranges": "sequences.csv"}).cases()
    assert [c.group for c in from_file] == [c.group for c in cases]


def test_group_from_regex_template_mapping_file_and_unmatched(tmp_path):
    r = _frames(tmp_path, group={"regex": r"^(\d)", "input": "{stem}"})
    assert {c.id: c.group for c in r.cases()}["17"] == "1"
    assert _frames(tmp_path, group="video-{stem}").cases()[0].group.startswith("video-")
    (tmp_path / "polyp" / "videos.json").write_text(json.dumps({str(i): f"v{(i - 1) // 12}" for i in range(1, 25)}), encoding="utf-8")
    assert {c.id: c.group for c in _frames(tmp_path, group={"file": "videos.json", "key": "id", "value": "video"}).cases()}["13"] == "v1"
    write_rows(tmp_path / "polyp" / "videos.xlsx", [{"frame": str(i), "video": f"v{(i - 1) // 12}"} for i in range(1, 21)])
    r = _frames(tmp_path, group={"file": "videos.xlsx", "key": "frame", "value": "video"})
    cases = r.cases()
    issues = r.dataset_checks(cases)
    assert len(issues) == 1 and issues[0].fatal and "4 case(s) have no group" in issues[0].problem and "21, 22, 23 and 1 more" in issues[0].problem
    own = _frames(tmp_path, group={"file": "videos.xlsx", "key": "frame", "value": "video", "unmatched": "own"})
    assert {c.id: c.group for c in own.cases()}["24"] == "24" and own.dataset_checks([]) == []


def test_range_groups_keep_each_sequence_on_one_side_of_the_split(tmp_path):
    write_frames(tmp_path / "polyp", sequences=4, per_seq=6)
    spec = spec_of(POLYP_TASK, tmp_path / "tasks" / "polyp_seq")
    data = load_task_data(spec, tmp_path)
    side = {}
    for part in ("train", "val", "test"):
        for c in data.split[part]:
            assert side.setdefault(c.group, part) == part, f"{c.group} in {side[c.group]} and {part}"
    assert len(side) == 4 and all(len(data.split[p]) for p in ("train", "val", "test"))


# -- folders whose names lie --------------------------------------------------------------------


def test_swapped_image_and_mask_folders_are_warned_about(tmp_path):
    root = write_frames(tmp_path / "polyp", sequences=1, per_seq=4, image_dir="masks", mask_dir="images")  # the publisher's copy lies
    wrong = make_reader("paired_images", root, {"images": "images/*.png", "masks": "masks/{name}", "classes": ["bg", "fg"]})
    issues = [i for c in wrong.cases() for i in wrong.check(c)]
    photo = [i for i in issues if "looks like a photograph" in i.problem]
    binary = [i for i in issues if "looks like a mask" in i.problem]
    assert len(photo) == 4 and len(binary) == 4 and not any(i.fatal for i in issues)
    assert "exchange data.options.images and data.options.masks" in photo[0].fix
    right = make_reader("paired_images", root, {"images": "masks/*.png", "masks": "images/{name}", "classes": ["bg", "fg"]})
    assert [i for c in right.cases() for i in right.check(c)] == []
    from lvmbench.data.content_hints import looks_binary
    from lvmbench.data.imageio import read_image

    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 20:50] = 255
    Image.fromarray(mask).save(tmp_path / "mask.jpg", quality=90)  # JPEG noise: many values, still a mask
    assert looks_binary(read_image(tmp_path / "mask.jpg"))[0] and not looks_binary(read_image(root / "masks" / "1.png"))[0]


# -- 3D volumes through SimpleITK ---------------------------------------------------------------


def _volume(rng, shape=(10, 12, 6)) -> tuple[np.ndarray, np.ndarray]:
    lab = np.zeros(shape, np.uint8)
    lab[3:7, 4:8, 2:4] = 1
    return (rng.random(shape) * 50 + lab * 100).astype(np.float32), lab


def test_volume_pairs_nrrd_matches_nibabel_reading_the_same_voxels(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    (tmp_path / "v" / "scans").mkdir(parents=True)
    (tmp_path / "v" / "segs").mkdir()
    img, lab = _volume(rng)
    spacing = (0.8, 0.9, 2.5)
    for arr, path in ((img, "scans/p01_ct.nrrd"), (lab, "segs/p01_ct.nrrd")):
        im = sitk.GetImageFromArray(arr.transpose(2, 1, 0))  # sitk arrays are (k, j, i)
        im.SetSpacing(spacing)
        sitk.WriteImage(im, str(tmp_path / "v" / path))
    # the independent reference: the same voxels as NIfTI, read by nibabel
    nib.save(nib.Nifti1Image(img, np.diag([*spacing, 1.0])), str(tmp_path / "ref.nii.gz"))
    r = make_reader("volume_pairs", tmp_path / "v", {"images": "scans/*.nrrd", "label": "segs/{stem}.nrrd", "group": {"regex": "^(p\\d+)_"}, "slice_axis": 2, "classes": ["bg", "fg"]})
    (case,) = r.cases()
    ref = np.moveaxis(np.asarray(nib.load(str(tmp_path / "ref.nii.gz")).dataobj), 2, 0)
    np.testing.assert_array_equal(r.load_image(case), ref)
    assert r.load_target(case).sum() == lab.sum() and case.group == "p01"
    assert case.meta["shape"] == [6, 10, 12] and np.allclose(case.meta["spacing"], [2.5, 0.8, 0.9])
    assert r.check(case) == []
    shifted = sitk.ReadImage(str(tmp_path / "v/segs/p01_ct.nrrd"))
    shifted.SetOrigin((0.0, 0.0, 7.5))
    sitk.WriteImage(shifted, str(tmp_path / "v/segs/p01_ct.nrrd"))
    issues = make_reader("volume_pairs", tmp_path / "v", {"images": "scans/*.nrrd", "label": "segs/{stem}.nrrd", "classes": ["bg", "fg"]}).check(case)
    assert len(issues) == 1 and "affine differs" in issues[0].problem


def test_volume_pairs_reads_a_dicom_series_folder(tmp_path):
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    img, lab = _volume(rng, (8, 8, 5))
    series = tmp_path / "v" / "pat1" / "ct"
    series.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.19"
    for k in range(img.shape[2]):
        sl = sitk.GetImageFromArray(np.round(img[:, :, k].T).astype(np.int16))
        for tag, value in (("0020|000e", uid), ("0020|000d", uid + ".1"), ("0020|0013", str(k + 1)), ("0020|0032", f"0\\0\\{2.0 * k}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "1\\1"), ("0018|0050", "2"), ("0008|0060", "CT")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"s{k:03d}.dcm"))
        writer.Execute(sl)
    lab_img = sitk.GetImageFromArray(lab.transpose(2, 1, 0))
    lab_img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(lab_img, str(tmp_path / "v" / "pat1" / "seg.nrrd"))
    r = make_reader("volume_pairs", tmp_path / "v", {"images": "*/ct", "pattern": "(?P<pid>[^/]+)/ct", "id": "{pid}", "label": "{pid}/seg.nrrd", "classes": ["bg", "fg"]})
    (case,) = r.cases()
    assert case.id == "pat1" and case.meta["stored_shape"] == [8, 8, 5]
    np.testing.assert_array_equal(r.load_image(case), np.moveaxis(np.round(img).astype(np.float32), 2, 0))
    assert r.check(case) == []


# -- boxes from a table -------------------------------------------------------------------------


def test_csv_boxes_formats_negatives_and_bad_labels(tmp_path):
    root = tmp_path / "boxes"
    (root / "img").mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "img" / f"{name}.png")
    rows = [
        {"image_id": "a", "cls": "cell", "x": "5", "y": "6", "w": "10", "h": "8"},
        {"image_id": "a", "cls": "blob", "x": "20", "y": "10", "w": "4", "h": "4"},
        {"image_id": "b", "cls": "", "x": "", "y": "", "w": "", "h": ""},  # an image without objects
        {"image_id": "c", "cls": "cell", "x": "0.1", "y": "0.25", "w": "0.2", "h": "0.5"},
    ]
    write_rows(root / "boxes.csv", rows[:3])
    r = make_reader("csv_boxes", root, {"table": "boxes.csv", "image": "img/{image_id}.png", "label": "cls", "boxes": ["x", "y", "w", "h"], "box_format": "xywh", "classes": ["cell", "blob"]})
    cases = {c.id: c for c in r.cases()}
    a = r.load_target(cases["img/a.png"])
    assert [(b.x1, b.y1, b.x2, b.y2, b.label) for b in a] == [(5, 6, 15, 14, 0), (20, 10, 24, 14, 1)]
    assert r.load_target(cases["img/b.png"]) == []
    write_rows(root / "norm.csv", [rows[3]])
    n = make_reader("csv_boxes", root, {"table": "norm.csv", "image": "img/{image_id}.png", "label": "cls", "boxes": ["x", "y", "w", "h"], "box_format": "cxcywh", "normalized": True, "classes": ["cell"]})
    (b,) = n.load_target(n.cases()[0])
    assert np.allclose((b.x1, b.y1, b.x2, b.y2), (0.0, 0.0, 10.0, 20.0))  # centre (5, 10), size 10 x 20 on a 50 x 40 image
    write_rows(root / "bad.csv", [{**rows[0], "cls": "cel"}])
    with pytest.raises(DataError, match=r"bad.csv \(row 2\).*class 'cel' is not one of the task's classes"):
        make_reader("csv_boxes", root, {"table": "bad.csv", "image": "img/{image_id}.png", "label": "cls", "boxes": ["x", "y", "w", "h"], "classes": ["cell", "blob"]}).cases()


# -- images only tifffile decodes ---------------------------------------------------------------


def test_tiffs_pil_cannot_open_are_read_through_tifffile(tmp_path):
    import tifffile

    from lvmbench.data.imageio import image_size, read_image, read_mask

    rng = np.random.default_rng(0)
    five = rng.integers(0, 256, (12, 14, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(read_image(tmp_path / "five.tif"), five[..., :3])
    assert image_size(tmp_path / "five.tif") == (12, 14)
    grey = rng.random((12, 14)).astype(np.float32) * 3000
    rgbf = np.stack([grey, grey, grey], axis=2)
    tifffile.imwrite(tmp_path / "float.tif", rgbf)
    want = np.clip((grey - grey.min()) / (grey.max() - grey.min()) * 255 + 0.5, 0, 255).astype(np.uint8)  # min..max windowing
    np.testing.assert_array_equal(read_image(tmp_path / "float.tif", "L"), want)
    labels = rng.integers(0, 3, (12, 14, 4)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "mask.tif", labels, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.tif"), labels[..., :3].max(axis=2))  # as RGB(A): brightest of R, G, B
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(DataError) as e:
        read_image(tmp_path / "broken.tif")
    assert "cannot decode it (PIL: " in str(e.value) and "; tifffile: " in str(e.value) and "\n" not in str(e.value)


# -- samples ------------------------------------------------------------------------------------


def test_limit_takes_whole_groups_of_every_class_in_turn(tmp_path):
    root = write_derm(tmp_path / "derm", lesions=9)
    cases = make_reader("manifest", root, {**DERM, "group": {"column": "lesion_id"}}).cases()
    few = limit_cases(cases, 7)
    assert len(few) == 6 and sorted(c.label for c in few) == [0, 0, 1, 1, 2, 2]  # whole lesions: 3 x 2 images
    assert {c.group for c in few} == {"HAM_0000", "HAM_0001", "HAM_0002"}
    assert limit_cases(cases, None) == cases


def test_new_data_keys_leave_existing_spec_hashes_alone():
    from lvmbench.identity import spec_dict
    from lvmbench.spec import RunUnit
    from lvmbench.tasks import get_task

    task = get_task("kvasir_seg")
    unit = RunUnit(suite="lvmmed", task_id="kvasir_seg", protocol="seg2d", encoder="resnet18", weights_sha256="random-init")
    data = spec_dict(task, unit, task.settings("seg2d"))["data"]
    assert "location" not in data and "limit" not in data  # results written before these keys keep their identity
    sampled = task.model_copy(update={"data": task.data.model_copy(update={"limit": 10})})
    assert spec_dict(sampled, unit, task.settings("seg2d"))["data"]["limit"] == 10  # a sample is another identity


def test_segmentation_task_with_range_groups_runs_and_says_each_epoch(tmp_path, monkeypatch, capsys):
    from builders import task_folder
    from cli_helpers import cli

    write_frames(tmp_path / "data" / "polyp", sequences=4, per_seq=6)
    write_task(tmp_path / "tasks", POLYP_TASK)
    with task_folder(monkeypatch, tmp_path, tmp_path / "tasks"):
        code, _, err = cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--suite", "polyp-extra", "--data-root", str(tmp_path / "data"),
                           "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress")
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"] and all("polyp-extra/resnet18/random-init/polyp_seq/seg2d-s0.json" in ln and "val_dice" in ln for ln in lines), err
    rec = json.loads((tmp_path / "r/polyp-extra/resnet18/random-init/polyp_seq/seg2d-s0.json").read_text(encoding="utf-8"))
    assert {c["group"] for c in rec["per_case"]} <= {"seq1", "seq2", "seq3", "seq4"} and len({c["group"] for c in rec["per_case"]}) == 1


def test_epoch_line_only_without_progress_bars(capsys):
    from types import SimpleNamespace

    from lvmbench.protocols.epoch_log import epoch_line

    unit = SimpleNamespace(key=lambda: "s/e/w/t/p-s0.json")
    epoch_line(SimpleNamespace(progress=True, unit=unit), 1, 5, loss=0.5)
    epoch_line(SimpleNamespace(progress=False, unit=unit), 2, 5, loss=0.25, val_dice=0.75, skipped=None)
    err = capsys.readouterr().err
    assert err == "epoch 2/5  s/e/w/t/p-s0.json  loss 0.25  val_dice 0.75\n"


def test_class_folders_and_coco_take_group_sources(tmp_path):
    for cls in ("benign", "malignant"):
        (tmp_path / "cf" / cls).mkdir(parents=True)
        for pid in ("P1", "P2"):
            for k in range(2):
                Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(tmp_path / "cf" / cls / f"{pid}_{cls}_{k}.png")
    r = make_reader("class_folders", tmp_path / "cf", {"splits": [], "classes": ["benign", "malignant"], "group": {"regex": "^(?P<group>P\\d+)_", "input": "{name}"}})
    cases = r.cases()
    assert sorted({c.group for c in cases}) == ["P1", "P2"] and r.dataset_checks(cases) == []
    images = [{"id": i, "file_name": f"pat{i // 2}_img{i}.png", "height": 8, "width": 8} for i in range(4)]
    for im in images:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / im["file_name"])
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "lesion"}]}), encoding="utf-8")
    coco = make_reader("coco", tmp_path, {"annotations": "ann.json", "group": {"regex": "^(pat\\d+)_"}, "classes": ["lesion"]})
    assert [c.group for c in coco.cases()] == ["pat0", "pat0", "pat1", "pat1"]
