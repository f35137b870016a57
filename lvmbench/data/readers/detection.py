"""Detection layouts: VinDr-CXR (DICOM or Kaggle PNG + train.csv), Kvasir-SEG boxes JSON, Pascal VOC
XML and COCO JSON. ``load_target`` returns ``list[Box]`` in pixel coordinates of the decoded image
(``x2``/``y2`` exclusive edges, continuous coordinates), labels indexing the task's ``classes``.

Every reader takes ``classes`` (the task's class names, passed by ``load_task_data``) and ``aliases``
(publisher name -> task class). Names are matched case-insensitively with ``_`` and spaces equal, so
VinDr's CSV names ("Aortic enlargement") and LVM-Med's COCO names ("Aortic_enlargement") both map.
Boxes with no area are dropped, reported by ``dataset_checks`` (non-fatal) and never crash a run.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydantic import Field
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_voi_lut

from lvmbench.data.cases import READERS, Box, Case, DatasetReader, Issue
from lvmbench.data.contained import InsidePath, inside
from lvmbench.data.imageio import image_size as oriented_size
from lvmbench.data.imageio import read_image
from lvmbench.data.reader_options import Bool, ReaderOptions, Str
from lvmbench.data.readers.groups import GroupResolver, GroupSource
from lvmbench.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dicom", ".dcm")


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of the decoded image (EXIF orientation applied, as ``read_image`` does),
    from the file header."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        ds = _dcmread(path, header_only=True)
        return int(ds.Rows), int(ds.Columns)
    return oriented_size(path)


def _dcmread(path: Path, header_only: bool = False):
    if not path.is_file():
        raise DataError("file not found", path=path, fix="restore the file or remove its rows from the annotation file")
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError) as e:
        raise DataError(f"not a readable DICOM file ({str(e)[:100]})", path=path, fix="re-download this file") from None


def read_dicom(path: Path) -> np.ndarray:
    """A DICOM image as HxW uint8: VOI LUT / windowing applied, MONOCHROME1 inverted, min-max scaled."""
    ds = _dcmread(path)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises RuntimeError/NotImplementedError/ValueError per codec
        raise DataError(
            f"cannot decode the DICOM pixel data ({str(e).splitlines()[0][:120]})",
            path=path,
            fix="install a decoder for its transfer syntax (pip install pylibjpeg pylibjpeg-openjpeg) or use the Kaggle PNG export",
        ) from None
    arr = apply_voi_lut(arr, ds).astype(np.float32)
    if arr.ndim != 2:
        raise DataError(f"expected a single-frame greyscale image, got shape {arr.shape}", path=path, fix="export one frame per file")
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() - arr  # MONOCHROME1 stores bright-is-low; present it like MONOCHROME2
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip((arr - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class BoxOptions(ReaderOptions):
    classes: list[Str] = Field(default_factory=list, description="the task's classes (filled in from the task)")
    aliases: dict[Str, Str] = Field(default_factory=dict, description="publisher class name -> task class")


class GroupedBoxOptions(BoxOptions):
    group: GroupSource | None = Field(None, description="patient group: template over id, name, stem, parent, rel of the image, or a group source (default: the image)")


class BoxReader(DatasetReader):
    """Shared parts of the box layouts: class mapping, box cleaning, checks."""

    kind = "detection"
    Options = BoxOptions

    def __init__(self, root, classes=(), aliases=None, group=None, **options):
        super().__init__(root, **options)
        self.classes = list(classes)
        self.aliases = {_norm(k): v for k, v in (aliases or {}).items()}
        self._index = {_norm(c): i for i, c in enumerate(self.classes)}
        self._dropped: list[Issue] = []
        self.group = GroupSource.model_validate(group) if group is not None else None

    def regroup(self, cases: list[Case]) -> list[Case]:
        """Cases with the groups of ``data.options.group`` (unplaced ones reported by verify)."""
        if self.group is None:
            return cases
        groups = GroupResolver(self.group, self.root)
        out = []
        for c in cases:
            p = Path(c.image)
            out.append(replace(c, group=groups({"id": c.id, "name": p.name, "stem": p.stem, "parent": p.parent.as_posix(), "rel": c.image}, c.group)))
        self._dropped += groups.issues(self.root)
        return out

    def label_of(self, name: str, where: Path | str) -> int:
        key = _norm(self.aliases.get(_norm(name), name))
        if key not in self._index:
            raise DataError(
                f"class '{name}' is not one of the task's classes ({', '.join(self.classes) or 'none given'})",
                path=where,
                fix="add an alias in the task's data.options.aliases or correct the annotation",
            )
        return self._index[key]

    def make_box(self, x1: float, y1: float, x2: float, y2: float, label: int, where: str) -> Box | None:
        """A Box, or None (recorded for ``dataset_checks``) when it has no area or is not finite."""
        vals = (x1, y1, x2, y2)
        if not all(math.isfinite(v) for v in vals) or x2 <= x1 or y2 <= y1:
            self._dropped.append(
                Issue(where, f"degenerate box ({', '.join(f'{v:g}' for v in vals)}) dropped", "correct or delete the box", fatal=False)
            )
            return None
        return Box(float(x1), float(y1), float(x2), float(y2), int(label))

    def load_image(self, case: Case) -> np.ndarray:
        return read_image(self.root / case.image, "RGB")

    def load_target(self, case: Case) -> list[Box]:
        return list(case.target or ())

    def check(self, case: Case) -> list[Issue]:
        issues = super().check(case)
        if issues:
            return issues
        h, w = self.load_image(case).shape[:2]
        declared = case.meta.get("size")
        if declared and tuple(declared) != (h, w):
            issues.append(Issue(case.image, f"annotation says {declared[1]}x{declared[0]} but the image is {w}x{h}; boxes are rescaled", "re-export the annotation for this image", fatal=False))
        for b in self.load_target(case):
            if b.x1 < -1 or b.y1 < -1 or b.x2 > w + 1 or b.y2 > h + 1:
                issues.append(Issue(case.image, f"box ({b.x1:g}, {b.y1:g}, {b.x2:g}, {b.y2:g}) extends outside the {w}x{h} image; it is clipped", "correct the box", fatal=False))
        return issues

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        return list(self._dropped)


def _scale(boxes: list[Box], frm: tuple[int, int] | None, to: tuple[int, int], path: Path | None = None) -> list[Box]:
    """Rescale boxes annotated on an image of size ``frm`` (h, w) to the decoded size ``to``."""
    if not frm or tuple(frm) == tuple(to):
        return boxes
    if tuple(frm) == tuple(to)[::-1] and path is not None:
        # an annotation made on the stored pixels of a file whose EXIF tag rotates it on decoding
        raise DataError(
            f"the annotation is for a {frm[1]}x{frm[0]} image, the decoded image is {to[1]}x{to[0]} (rotated by its EXIF orientation tag?)",
            path=path,
            fix="re-save the image with its pixels upright and no orientation tag, or fix the annotation's size and boxes",
        )
    sy, sx = to[0] / frm[0], to[1] / frm[1]
    return [Box(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy, b.label) for b in boxes]


@READERS.register("kvasir_boxes")
class KvasirBoxes(BoxReader):
    """Kvasir-SEG with its box file: ``images/<id>.jpg`` + ``kavsir_bboxes.json``
    (``{id: {"height", "width", "bbox": [{"label", "xmin", "ymin", "xmax", "ymax"}]}}``).

    Options: ``images`` (folder), ``boxes`` (JSON file). Case ids are the image file names (as in
    LVM-Med's ``Kvasir.json`` split). Boxes are rescaled when the image is not the size the JSON
    declares (e.g. a resized copy of the dataset).
    """

    class Options(BoxOptions):
        images: InsidePath = Field("images", description="image folder")
        boxes: InsidePath = Field("kavsir_bboxes.json", description="the box JSON file")

    example = {"reader": "kvasir_boxes", "dir": "Kvasir-SEG", "options": {"images": "images", "boxes": "kavsir_bboxes.json"}}

    def __init__(self, root, images="images", boxes="kavsir_bboxes.json", **options):
        super().__init__(root, **options)
        self.images = images
        self.boxes = boxes

    def _json(self) -> dict[str, Any]:
        path = self.root / self.boxes
        if not path.is_file():
            raise DataError("box file not found", path=path, fix="place Kvasir-SEG's kavsir_bboxes.json next to images/")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"not valid JSON ({getattr(e, 'msg', e)} at line {getattr(e, 'lineno', '?')})", path=path, fix="re-download kavsir_bboxes.json") from None
        if not isinstance(data, dict):
            raise DataError("expected a JSON object mapping image ids to {height, width, bbox}", path=path, fix="re-download kavsir_bboxes.json")
        return data

    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder that holds Kvasir-SEG (images/, kavsir_bboxes.json)")
        self._dropped = []
        data = self._json()
        img_dir = self.root / self.images
        if not img_dir.is_dir():
            raise DataError("image folder not found", path=img_dir, fix="check data.options.images in the task")
        files = {f.stem: f for f in img_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
        jpath = self.root / self.boxes
        out = []
        for key in sorted(data):
            entry = data[key]
            f = files.get(Path(key).stem)
            if f is None:
                self._dropped.append(Issue(str(img_dir / f"{key}.jpg"), "listed in the box file but the image is missing", "restore the image", fatal=False))
                continue
            try:
                raw = entry["bbox"]
                size = (int(entry["height"]), int(entry["width"]))
                boxes = []
                for b in raw:
                    box = self.make_box(float(b["xmin"]), float(b["ymin"]), float(b["xmax"]), float(b["ymax"]), self.label_of(str(b.get("label", "polyp")), jpath), f"{jpath} [{key}]")
                    if box is not None:
                        boxes.append(box)
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"entry '{key}' lacks height/width/bbox fields or has non-numeric coordinates ({e.__class__.__name__}: {e})", path=jpath, fix="re-download kavsir_bboxes.json") from None
            rel = f.relative_to(self.root).as_posix()
            out.append(Case(id=f.name, group=f.stem, image=rel, target=tuple(boxes), files=(rel, self.boxes), meta={"size": size}))
        if not out:
            raise DataError("no image of the box file was found", path=img_dir, fix="check that the JSON keys match the image names")
        return out

    def load_target(self, case: Case) -> list[Box]:
        return _scale(list(case.target), case.meta.get("size"), image_size(self.root / case.image), self.root / case.image)


@READERS.register("voc")
class PascalVOC(BoxReader):
    """Pascal VOC: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/<set>.txt``.

    Options: ``annotations``, ``images``, ``imagesets`` (folders); ``sets`` (which ImageSets lists give
    the publisher split, e.g. [train, val, test]; the set name goes to ``meta['split']``; ids in none
    of the lists are skipped; empty = every XML, no publisher split); ``one_based`` (VOC pixel indices
    start at 1: ``xmin - 1``; default true); ``difficult`` (keep | drop, default keep). Boxes whose
    raw ``xmax <= xmin`` or ``ymax <= ymin`` are dropped and reported.
    """

    class Options(GroupedBoxOptions):
        annotations: InsidePath = Field("Annotations", description="folder of the XML files")
        images: InsidePath = Field("JPEGImages", description="image folder")
        imagesets: InsidePath = Field("ImageSets/Main", description="folder of the image-set lists")
        sets: list[InsidePath] = Field(default_factory=lambda: ["train", "val", "test"], description="lists giving the publisher split ([] = every XML, no split)")
        one_based: Bool = Field(True, description="VOC pixel indices start at 1")
        difficult: Literal["keep", "drop"] = Field("keep", description="objects marked difficult")

    example = {"reader": "voc", "dir": "BCCD", "options": {"sets": ["train", "val", "test"], "aliases": {"wbc": "WBC"}}}

    def __init__(self, root, annotations="Annotations", images="JPEGImages", imagesets="ImageSets/Main", sets=("train", "val", "test"), one_based=True, difficult="keep", **options):
        super().__init__(root, **options)
        self.annotations = annotations
        self.images = images
        self.imagesets = imagesets
        self.sets = list(sets)
        self.one_based = bool(one_based)
        self.difficult = difficult

    def _split_of(self) -> dict[str, str] | None:
        if not self.sets:
            return None
        where: dict[str, str] = {}
        for s in self.sets:
            path = self.root / self.imagesets / f"{s}.txt"
            if not path.is_file():
                raise DataError(f"image set list '{s}' not found", path=path, fix="restore ImageSets/Main or set data.options.sets to the lists you have ([] for none)")
            for line in path.read_text(encoding="utf-8").split("\n"):
                key = line.strip().split(" ")[0] if line.strip() else ""
                if not key:
                    continue
                if key in where and where[key] != s:
                    raise DataError(f"'{key}' is listed in both {where[key]}.txt and {s}.txt", path=path, fix="list each image in one of data.options.sets only (e.g. not trainval together with train)")
                where[key] = s
        return where

    def parse(self, xml_path: Path) -> tuple[str, tuple[int, int] | None, list[Box]]:
        """(image file name, declared (h, w) or None, boxes) of one annotation file."""
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as e:
            raise DataError(f"malformed VOC XML ({str(e)[:100]})", path=xml_path, fix="re-export or delete this annotation file") from None
        fname = (root.findtext("filename") or f"{xml_path.stem}.jpg").strip()
        # the XML is the dataset's, not the user's: its <filename> may not lead out of the image folder
        inside(fname, what="<filename>", path=xml_path, fix="make <filename> a file name inside data.options.images (to use images kept elsewhere, link them into the dataset folder)")
        size = None
        try:
            w, h = int(float(root.findtext("size/width") or 0)), int(float(root.findtext("size/height") or 0))
            size = (h, w) if w > 0 and h > 0 else None
        except ValueError:
            size = None
        boxes = []
        off = 1.0 if self.one_based else 0.0
        for i, obj in enumerate(root.findall("object")):
            name = (obj.findtext("name") or "").strip()
            if self.difficult == "drop" and (obj.findtext("difficult") or "0").strip() == "1":
                continue
            bb = obj.find("bndbox")
            try:
                x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr, arg-type]
            except (AttributeError, TypeError, ValueError):
                raise DataError(f"object {i + 1} ('{name}') has no numeric bndbox xmin/ymin/xmax/ymax", path=xml_path, fix="correct or delete the object") from None
            label = self.label_of(name, xml_path)
            if x2 <= x1 or y2 <= y1:  # judged on the raw values, before the 1-based shift
                self.make_box(x1, y1, x1, y1, label, f"{xml_path} (object {i + 1}, {name})")
                continue
            box = self.make_box(x1 - off, y1 - off, x2, y2, label, f"{xml_path} (object {i + 1}, {name})")
            if box is not None:
                boxes.append(box)
        return fname, size, boxes

    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder that holds the VOC layout (Annotations/, JPEGImages/)")
        self._dropped = []
        ann_dir = self.root / self.annotations
        if not ann_dir.is_dir():
            raise DataError("annotation folder not found", path=ann_dir, fix="check data.options.annotations in the task")
        split_of = self._split_of()
        out = []
        for xml in sorted(ann_dir.glob("*.xml")):
            if split_of is not None and xml.stem not in split_of:
                continue
            fname, size, boxes = self.parse(xml)
            img = self.root / self.images / fname
            if not img.is_file():
                alt = [p for p in (self.root / self.images / f"{xml.stem}{s}" for s in IMAGE_SUFFIXES) if p.is_file()]
                if not alt:
                    self._dropped.append(Issue(str(img), "annotated but the image is missing; case skipped", "restore the image", fatal=False))
                    continue
                img = alt[0]
            rel = img.relative_to(self.root).as_posix()
            meta: dict[str, Any] = {"size": size}
            if split_of is not None:
                meta["split"] = split_of[xml.stem]
            out.append(Case(id=xml.stem, group=xml.stem, image=rel, target=tuple(boxes), files=(rel, xml.relative_to(self.root).as_posix()), meta=meta))
        if not out:
            raise DataError("no annotated images found", path=ann_dir, fix="check the VOC layout and data.options.sets")
        return self.regroup(out)

    def load_target(self, case: Case) -> list[Box]:
        return _scale(list(case.target), case.meta.get("size"), image_size(self.root / case.image), self.root / case.image)


@READERS.register("coco")
class CocoJSON(BoxReader):
    """COCO-style JSON: ``annotations`` is one file or a mapping ``split -> file`` (LVM-Med's VinDr
    export: ``{train: train_annotations.json, valid: valid_annotations.json, test: ...}``);
    ``file_name`` is relative to ``images`` (default: the dataset folder). Categories map to the
    task's classes by name; ``iscrowd`` regions are not objects and are skipped. Case ids are the
    ``file_name``s; the mapping's key goes to ``meta['split']``.
    """

    class Options(GroupedBoxOptions):
        annotations: InsidePath | dict[Str, InsidePath] = Field("annotations.json", description="the COCO JSON, or {publisher split: file}")
        images: InsidePath = Field("", description="folder the file_names are relative to (default: the dataset folder)")

    example = {"reader": "coco", "dir": "lesions_coco", "options": {"annotations": {"train": "train.json", "val": "val.json", "test": "test.json"}, "images": "images"}}

    def __init__(self, root, annotations="annotations.json", images="", **options):
        super().__init__(root, **options)
        self.annotations = annotations
        self.images = images

    def _load(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise DataError("COCO annotation file not found", path=path, fix="check data.options.annotations in the task")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["images"], data["categories"]  # noqa: B018  (presence check)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"not valid JSON ({getattr(e, 'msg', e)})", path=path, fix="re-export the COCO file") from None
        except (KeyError, TypeError):
            raise DataError("not a COCO detection file (needs 'images' and 'categories')", path=path, fix="re-export the COCO file") from None
        return data

    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder that holds the images and COCO JSON files")
        self._dropped = []
        files = self.annotations if isinstance(self.annotations, dict) else {None: self.annotations}
        out: list[Case] = []
        seen: set[str] = set()
        for split, rel_json in files.items():
            path = self.root / rel_json
            data = self._load(path)
            try:
                cats = {c["id"]: self.label_of(str(c["name"]), path) for c in data["categories"]}
                per_image: dict[Any, list[Box]] = {im["id"]: [] for im in data["images"]}
                for a in data.get("annotations", []):
                    if a.get("iscrowd", 0):
                        continue
                    x, y, w, h = (float(v) for v in a["bbox"])
                    box = self.make_box(x, y, x + w, y + h, cats[a["category_id"]], f"{path} [annotation {a.get('id')}]")
                    if box is not None:
                        per_image[a["image_id"]].append(box)
                for im in data["images"]:
                    name = inside(str(im["file_name"]), what=f"image {im.get('id')!r}: file_name", path=path, fix="make file_name relative to data.options.images (to use images kept elsewhere, link them into the dataset folder)")
                    rel = (Path(self.images) / name).as_posix()
                    if rel in seen:
                        raise DataError(f"image '{rel}' appears twice", path=path, fix="list each image once across the annotation files")
                    seen.add(rel)
                    size = (int(im["height"]), int(im["width"])) if im.get("height") and im.get("width") else None
                    meta: dict[str, Any] = {"size": size}
                    if split is not None:
                        meta["split"] = split
                    out.append(Case(id=rel, group=rel, image=rel, target=tuple(per_image[im["id"]]), files=(rel, str(rel_json)), meta=meta))
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"malformed COCO entry ({e.__class__.__name__}: {e})", path=path, fix="re-export the COCO file") from None
        if not out:
            raise DataError("no images listed", path=self.root, fix="check data.options.annotations")
        return self.regroup(out)

    def load_target(self, case: Case) -> list[Box]:
        return _scale(list(case.target), case.meta.get("size"), image_size(self.root / case.image), self.root / case.image)

