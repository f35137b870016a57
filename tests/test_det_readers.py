"""Detection readers: real samples (Kvasir-SEG boxes, BCCD VOC), synthetic VinDr DICOM/PNG and COCO,
and malformed files (one-line errors naming the file)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared

from lvmbench.data.cases import make_reader
from lvmbench.data.synth.detection import VINDR_CLASSES, write_vindr, write_voc
from lvmbench.errors import DataError

BCCD = ["WBC", "RBC", "Platelets"]


def one_line(err: pytest.ExceptionInfo, name: str) -> str:
    text = str(err.value)
    assert "\n" not in text and name in text and "fix:" in text
    return text


# --- Kvasir-SEG boxes --------------------------------------------------------------------------


def test_kvasir_real_sample():
    root = shared("kvasir_seg")
    r = make_reader("kvasir_boxes", root, {"classes": ["polyp"]})
    cases = r.cases()
    assert len(cases) == 1000
    assert sum(len(c.target) for c in cases) == 1071
    c = next(c for c in cases if c.id == "cju0qkwl35piu0993l0dewei2.jpg")
    (b,) = r.load_target(c)
    assert (b.x1, b.y1, b.x2, b.y2, b.label) == (38, 5, 430, 338, 0)
    assert r.load_image(c).shape == (529, 622, 3)
    assert r.dataset_checks(cases) == [] and r.check(c) == []
    # detection and segmentation name the same cases, so their rule splits coincide
    seg_ids = {c.id for c in make_reader("kvasir_seg", root, {}).cases()}
    assert {c.id for c in cases} == seg_ids


def _kvasir_copy(tmp_path: Path, synth_root: Path) -> Path:
    root = tmp_path / "kv"
    shutil.copytree(synth_root / "Kvasir-SEG-boxes", root)
    return root


def test_kvasir_malformed(tmp_path, synth_root):
    root = _kvasir_copy(tmp_path, synth_root)
    (root / "kavsir_bboxes.json").write_text('{"a": {"height": 10,', encoding="utf-8")
    with pytest.raises(DataError) as e:
        make_reader("kvasir_boxes", root, {"classes": ["polyp"]}).cases()
    one_line(e, "kavsir_bboxes.json")
    key = next(iter(json.loads((synth_root / "Kvasir-SEG-boxes" / "kavsir_bboxes.json").read_text(encoding="utf-8"))))
    (root / "kavsir_bboxes.json").write_text(json.dumps({key: {"bbox": [{"label": "polyp", "xmin": 1}]}}), encoding="utf-8")
    with pytest.raises(DataError) as e:
        make_reader("kvasir_boxes", root, {"classes": ["polyp"]}).cases()
    assert "lacks height/width/bbox" in one_line(e, "kavsir_bboxes.json")


def test_kvasir_boxes_follow_a_resized_copy(tmp_path, synth_root):
    from PIL import Image

    root = _kvasir_copy(tmp_path, synth_root)
    r = make_reader("kvasir_boxes", root, {"classes": ["polyp"]})
    c = r.cases()[0]
    before = r.load_target(c)
    h, w = r.load_image(c).shape[:2]
    Image.open(root / c.image).resize((w * 2, h * 2)).save(root / c.image)
    after = r.load_target(c)
    assert after[0].x2 == pytest.approx(before[0].x2 * 2) and after[0].y1 == pytest.approx(before[0].y1 * 2)
    assert any("rescaled" in i.problem for i in r.check(c))


# --- Pascal VOC ---------------------------------------------------------------------------------


def test_voc_real_bccd():
    root = shared("bccd")
    r = make_reader("voc", root, {"classes": BCCD})
    cases = r.cases()
    assert len(cases) == 364
    splits = {s: sum(c.meta["split"] == s for c in cases) for s in ("train", "val", "test")}
    assert splits == {"train": 205, "val": 87, "test": 72}
    assert sum(len(c.target) for c in cases) == 4888 - 2  # the two degenerate boxes are dropped
    issues = r.dataset_checks(cases)
    assert len(issues) == 2 and all(not i.fatal and "degenerate" in i.problem for i in issues)
    assert {Path(i.path.split(" ")[0]).name for i in issues} == {"BloodImage_00338.xml", "BloodImage_00343.xml"}
    c = cases[0]
    b = r.load_target(c)[0]  # <xmin>260</xmin><ymin>177</ymin><xmax>491</xmax><ymax>376</ymax>, 1-based
    assert (b.x1, b.y1, b.x2, b.y2, BCCD[b.label]) == (259, 176, 491, 376, "WBC")


def _voc(tmp_path: Path, n: int = 8) -> Path:
    root = tmp_path / "voc"
    write_voc(root, np.random.default_rng(0), n=n, h=48, w=64)
    return root


def test_voc_malformed_xml_and_unknown_class(tmp_path):
    root = _voc(tmp_path)
    bad = root / "Annotations" / "BloodImage_00001.xml"
    bad.write_text("<annotation><object><name>RBC</name>", encoding="utf-8")
    with pytest.raises(DataError) as e:
        make_reader("voc", root, {"classes": BCCD}).cases()
    assert "malformed VOC XML" in one_line(e, "BloodImage_00001.xml")
    bad.write_text("<annotation><filename>BloodImage_00001.jpg</filename><object><name>Neutrophil</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>", encoding="utf-8")
    with pytest.raises(DataError) as e:
        make_reader("voc", root, {"classes": BCCD}).cases()
    assert "Neutrophil" in one_line(e, "BloodImage_00001.xml")
    # the same file is accepted once the name is aliased
    r = make_reader("voc", root, {"classes": BCCD, "aliases": {"Neutrophil": "WBC"}})
    assert any(c.id == "BloodImage_00001" for c in r.cases())


def test_voc_overlapping_image_sets_are_refused(tmp_path):
    root = _voc(tmp_path)
    with pytest.raises(DataError) as e:
        make_reader("voc", root, {"classes": BCCD, "sets": ["train", "trainval"]}).cases()
    one_line(e, "trainval.txt")


# --- COCO JSON ----------------------------------------------------------------------------------


def _coco_from_voc(root: Path) -> dict:
    r = make_reader("voc", root, {"classes": BCCD})
    images, anns = [], []
    for i, c in enumerate(r.cases()):
        images.append({"id": i + 7, "file_name": c.image, "height": 48, "width": 64})
        for b in r.load_target(c):
            anns.append({"id": len(anns) + 1, "image_id": i + 7, "category_id": b.label + 1, "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1], "area": 1.0, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": n.lower()} for k, n in enumerate(BCCD)]}


def test_coco_reader_matches_the_voc_boxes(tmp_path):
    root = _voc(tmp_path)
    data = _coco_from_voc(root)
    half = len(data["images"]) // 2
    for name, ims in (("train", data["images"][:half]), ("test", data["images"][half:])):
        ids = {im["id"] for im in ims}
        part = {**data, "images": ims, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
        (root / f"{name}.json").write_text(json.dumps(part), encoding="utf-8")
    voc = {c.image: make_reader("voc", root, {"classes": BCCD}).load_target(c) for c in make_reader("voc", root, {"classes": BCCD}).cases()}
    r = make_reader("coco", root, {"classes": BCCD, "annotations": {"train": "train.json", "test": "test.json"}})
    cases = r.cases()
    assert len(cases) == len(voc) and {c.meta["split"] for c in cases} == {"train", "test"}
    assert sum(len(v) for v in voc.values()) > 0
    for c in cases:
        got = [(b.x1, b.y1, b.x2, b.y2, b.label) for b in r.load_target(c)]
        want = [(b.x1, b.y1, b.x2, b.y2, b.label) for b in voc[c.image]]
        assert np.allclose(np.array(got).reshape(-1, 5), np.array(want).reshape(-1, 5))
        assert r.load_image(c).shape == (48, 64, 3)


def test_coco_malformed(tmp_path):
    root = _voc(tmp_path)
    (root / "a.json").write_text(json.dumps({"images": []}), encoding="utf-8")
    with pytest.raises(DataError) as e:
        make_reader("coco", root, {"classes": BCCD, "annotations": "a.json"}).cases()
    assert "needs 'images' and 'categories'" in one_line(e, "a.json")
    data = _coco_from_voc(root)
    data["annotations"][0]["bbox"] = ["x", 1, 2, 3]
    (root / "b.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as e:
        make_reader("coco", root, {"classes": BCCD, "annotations": "b.json"}).cases()
    one_line(e, "b.json")


# --- VinDr-CXR ----------------------------------------------------------------------------------


def _vindr(tmp_path: Path, variant: str = "dicom", n: int = 18) -> Path:
    root = tmp_path / f"vindr-{variant}"
    write_vindr(root, np.random.default_rng(1), n=n, size=64, variant=variant)
    return root


def _rows(root: Path) -> list[dict]:
    with open(root / "train.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_vindr_dicom_cases_fusion_and_negatives(tmp_path):
    root = _vindr(tmp_path)
    rows = _rows(root)
    r = make_reader("vindr_cxr", root, {"classes": list(VINDR_CLASSES)})
    cases = r.cases()
    negatives = {x["image_id"] for x in rows} - {x["image_id"] for x in rows if x["class_name"] != "No finding"}
    assert negatives and not negatives & {c.id for c in cases}
    assert len(cases) == len({x["image_id"] for x in rows}) - len(negatives)
    both = make_reader("vindr_cxr", root, {"classes": list(VINDR_CLASSES), "keep_negatives": True}).cases()
    assert len(both) == len(cases) + len(negatives)
    for c in cases:
        mine = [x for x in rows if x["image_id"] == c.id]
        fused = r.load_target(c)
        # one box per finding and class: the radiologists' boxes of a finding are fused into their mean
        for b in fused:
            cls = VINDR_CLASSES[b.label]
            group = np.array([[float(x[k]) for k in ("x_min", "y_min", "x_max", "y_max")] for x in mine if x["class_name"] == cls])
            assert len(group) >= 1
            assert np.allclose([b.x1, b.y1, b.x2, b.y2], group.mean(0), atol=1e-3)
        assert len(fused) == len({x["class_name"] for x in mine})
        raw = make_reader("vindr_cxr", root, {"classes": list(VINDR_CLASSES), "fusion": "none"}).load_target(c)
        assert len(raw) == len(mine)
    img = r.load_image(cases[0])
    assert img.shape == (64, 64, 1) and img.dtype == np.uint8


def test_vindr_monochrome1_is_inverted(tmp_path):
    import pydicom

    root = _vindr(tmp_path)
    r = make_reader("vindr_cxr", root, {"classes": list(VINDR_CLASSES), "keep_negatives": True})
    kinds = {}
    for c in r.cases():
        kinds.setdefault(str(pydicom.dcmread(root / c.image, stop_before_pixels=True).PhotometricInterpretation), c)
    assert set(kinds) == {"MONOCHROME1", "MONOCHROME2"}
    for c in kinds.values():
        img = r.load_image(c)[..., 0].astype(float)
        # the body is bright and the corners dark in both encodings once decoded
        assert img[24:40, 24:40].mean() > img[:6, :6].mean() + 40


def test_vindr_png_export_rescales_boxes(tmp_path):
    dic, png = _vindr(tmp_path, "dicom"), _vindr(tmp_path, "png")
    a = make_reader("vindr_cxr", dic, {"classes": list(VINDR_CLASSES)})
    b = make_reader("vindr_cxr", png, {"classes": list(VINDR_CLASSES)})
    ca, cb = a.cases(), b.cases()
    assert [c.id for c in ca] == [c.id for c in cb]
    assert b.load_image(cb[0]).shape == (32, 32, 1)  # the export is half the size of the originals
    for x, y in zip(ca, cb):
        bx, by = a.load_target(x), b.load_target(y)
        assert np.allclose([[v.x1, v.y1, v.x2, v.y2] for v in bx], [[2 * v.x1, 2 * v.y1, 2 * v.x2, 2 * v.y2] for v in by], atol=1e-3)


def test_vindr_csv_order_split(tmp_path):
    root = _vindr(tmp_path, n=30)
    r = make_reader("vindr_cxr", root, {"classes": list(VINDR_CLASSES), "csv_order_split": [0.7, 0.1, 0.2]})
    cases = r.cases()
    n = len(cases)
    names = [c.meta["split"] for c in cases]
    assert names == ["train"] * int(0.7 * n) + ["valid"] * (int(0.8 * n) - int(0.7 * n)) + ["test"] * (n - int(0.8 * n))


def test_vindr_malformed(tmp_path):
    root = _vindr(tmp_path)
    text = (root / "train.csv").read_text(encoding="utf-8").splitlines()
    (root / "train.csv").write_text("\n".join([text[0].replace("x_min", "xmin"), *text[1:]]), encoding="utf-8")
    with pytest.raises(DataError) as e:
        make_reader("vindr_cxr", root, {"classes": list(VINDR_CLASSES)}).cases()
    assert "x_min" in one_line(e, "train.csv")
    root2 = _vindr(tmp_path / "b")
    r = make_reader("vindr_cxr", root2, {"classes": list(VINDR_CLASSES)})
    c = r.cases()[0]
    (root2 / c.image).write_bytes(b"not a dicom file at all")
    with pytest.raises(DataError) as e:
        r.load_image(c)
    one_line(e, Path(c.image).name)
    issues = r.check(c)
    assert issues and issues[0].fatal
