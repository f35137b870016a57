"""What ``lvmbench task new`` can tell from a dataset folder: reader, data options, classes, split.

Everything here is a guess the user reviews (the scaffold prints what is left to check); it reads
file names, table headers and a few pixels, never the whole dataset:

- classification: a table (CSV/TSV/XLSX) whose column names image files -> ``manifest`` (label,
  group and split columns picked by name and value counts; one-hot label columns recognised);
  else one folder per class (optionally under split folders) -> ``class_folders``;
- segmentation: the two folders sharing the most file stems (a ``_mask``-style suffix allowed) ->
  ``paired_images`` (2D) or ``nifti_pairs``/``volume_pairs`` (3D); which side holds the masks is
  decided by the pixels, not the folder names; classes from the masks' values;
- detection: a COCO JSON -> ``coco``; ``*.xml`` VOC annotations -> ``voc``; a table with four
  coordinate columns -> ``csv_boxes``.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from lvmbench.data.imageio import read_mask
from lvmbench.data.readers.tables import TABLE_SUFFIXES, FileIndex, Table, read_table
from lvmbench.errors import UserError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
VOLUME_EXT = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "testing": "test"}
LABEL_NAMES = ("label", "labels", "class", "classes", "diagnosis", "dx", "target", "category", "grade", "finding", "y")
GROUP_NAMES = ("patient", "patient_id", "patientid", "subject", "subject_id", "lesion", "lesion_id", "group", "case", "case_id", "study", "video", "sequence", "seq")
MASK_SUFFIXES = ("", "_mask", "_masks", "_seg", "_segmentation", "_label", "_labels", "_gt", "-mask", "_Segmentation")


@dataclass
class Inferred:
    reader: str
    options: dict[str, Any]
    classes: list[str]
    dims: str = "2d"
    split: dict[str, Any] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)


def ext_of(name: str) -> str:
    low = name.lower()
    for e in VOLUME_EXT:
        if low.endswith(e):
            return name[-len(e):]
    return os.path.splitext(name)[1]


def stem_of(name: str) -> str:
    e = ext_of(name)
    return name[: -len(e)] if e else name


def infer(family: str, root: Path) -> Inferred:
    if family == "classification":
        return _classification(root)
    if family == "segmentation":
        return _segmentation(root)
    if family == "detection":
        return _detection(root)
    raise UserError(f"family '{family}' is not one of classification, segmentation, detection", fix="pass --family classification|segmentation|detection")


# -- classification -----------------------------------------------------------------------------


def _tables(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES and p.suffix.lower() != ".txt")


def _image_column(table: Table, index: FileIndex, root: Path) -> tuple[str, str] | None:
    """(column, image option): a column whose values name image files, as the column itself when
    they are paths from the dataset folder, else a template that adds their folder and extension."""
    for col in table.columns:
        values = [r[col] for r in table.rows if r[col]][:30]
        if not values:
            continue
        direct = sum(index.find(v) is not None for v in values)
        if direct >= max(1, int(0.8 * len(values))):
            return col, col
        dirs, exts, hits = Counter(), Counter(), 0
        for v in values:
            name = v.replace("\\", "/").rsplit("/", 1)[-1]
            for e in ("", *IMAGE_EXT, *(x.upper() for x in IMAGE_EXT)):
                found = index.by_name.get(name + e)
                if found:
                    hits += 1
                    dirs[str(Path(found[0]).parent)] += 1
                    exts[e] += 1
                    break
        if hits < max(1, int(0.8 * len(values))) or any("/" in v for v in values):
            continue
        ext = exts.most_common(1)[0][0]
        folders = sorted(dirs)
        folder = folders[0] if len(folders) == 1 else os.path.commonprefix(folders) + "*"
        return col, ("" if folder in (".", "") else folder + "/") + "{" + col + "}" + ext
    return None


def _names_a_file(values: list[str], index: FileIndex) -> bool:
    for v in values:
        name = v.replace("\\", "/").rsplit("/", 1)[-1]
        if index.find(v) is not None or any(name + e in index.by_name for e in ("", *IMAGE_EXT)):
            return True
    return False


def _pick(table: Table, names: tuple[str, ...], ok) -> str | None:
    by_name = sorted(table.columns, key=lambda c: (c.lower() not in names, table.columns.index(c)))
    for c in by_name:
        if c.lower() in names and ok(c):
            return c
    return None


def _classification(root: Path) -> Inferred:
    index = None
    for path in _tables(root):
        try:
            table = read_table(path)
        except UserError:
            continue
        if not table.rows:
            continue
        index = index or FileIndex(root, IMAGE_EXT)
        headerless = _names_a_file(table.columns, index)
        if headerless:  # the first row is data (FGADR's grading CSV): columns become col1, col2, ...
            table = read_table(path, header=False)
        hit = _image_column(table, index, root)
        if hit is None:
            continue
        col, template = hit
        rest = [c for c in table.columns if c != col]
        n = len(table.rows)
        distinct = {c: len({r[c] for r in table.rows}) for c in rest}
        inf = Inferred("manifest", {"table": path.name, **({"header": False} if headerless else {}), "image": template}, [], found=[f"table {path.name}{' (no header row)' if headerless else ''}: images in column '{col}'"])
        hot = [c for c in rest if all(r[c] in ("0", "1", "0.0", "1.0") for r in table.rows)]
        split_col = next((c for c in rest if {r[c].lower() for r in table.rows} and {r[c].lower() for r in table.rows} <= set(SPLIT_WORDS)), None)
        label = _pick(table, LABEL_NAMES, lambda c: 2 <= distinct[c] <= 100)
        if label is None:
            label = next((c for c in rest if 2 <= distinct[c] <= min(50, n // 2) and c != split_col and c not in hot), None)
        if label is None and len(hot) >= 2 and all(sum(float(r[c]) for c in hot) == 1 for r in table.rows[:200]):
            inf.options["label_columns"] = hot
            inf.classes = list(hot)
            inf.found.append(f"one-hot label columns {', '.join(hot)}")
        elif label is not None:
            inf.options["label"] = label
            inf.classes = sorted({r[label] for r in table.rows if r[label]}, key=_natural)
            inf.found.append(f"labels in column '{label}': {len(inf.classes)} classes")
        else:
            inf.todo.append("set data.options.label (the label column) and the task's classes")
        group = _pick(table, GROUP_NAMES, lambda c: 1 < distinct[c] < n)
        if group is not None:
            inf.options["group"] = {"column": group}
            inf.found.append(f"groups (patients/lesions) in column '{group}': {distinct[group]} groups for {n} rows")
        else:
            inf.todo.append("no patient/group column found: each image is its own group; set data.options.group if images share patients")
        if split_col is not None:
            inf.options["split"] = split_col
            values = sorted({r[split_col] for r in table.rows})
            inf.split = {"source": "publisher", "map": {v: SPLIT_WORDS[v.lower()] for v in values}, "val": 0.15, "seed": 0, "group_by": "patient" if group else "case"}
            inf.found.append(f"publisher split in column '{split_col}' ({', '.join(values)})")
        else:
            inf.split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "group_by": "patient" if group else "case"}
        return inf
    return _class_folders(root)


def _natural(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_EXT for f in folder.iterdir() if f.is_file())


def _class_folders(root: Path) -> Inferred:
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = [p for p in subs if p.name.lower() in SPLIT_WORDS and any(q.is_dir() and _has_images(q) for q in p.iterdir())]
    if splits:
        classes = sorted({q.name for s in splits for q in s.iterdir() if q.is_dir() and _has_images(q)}, key=_natural)
        inf = Inferred("class_folders", {"splits": [s.name for s in splits]}, classes, found=[f"split folders {', '.join(s.name for s in splits)} holding class folders"])
        mapping = {s.name: SPLIT_WORDS[s.name.lower()] for s in splits}
        inf.split = {"source": "publisher", "map": mapping, "val": 0.15, "seed": 0, "group_by": "case"}
    else:
        classes = [p.name for p in subs if _has_images(p)]
        if len(classes) < 2:
            raise UserError("found neither a table naming the images nor two or more class folders", path=root, fix="point --from at the dataset folder (class folders, or a CSV/XLSX manifest next to the images)")
        inf = Inferred("class_folders", {"splits": []}, sorted(classes, key=_natural), found=[f"{len(classes)} class folders"])
        inf.split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "group_by": "case"}
    inf.todo.append("no patient information in class folders: each image is its own group (split.group_by: case); set data.options.group (regex/file) if images share patients")
    return inf


# -- segmentation -------------------------------------------------------------------------------


def _file_folders(root: Path, exts: tuple[str, ...]) -> dict[str, list[str]]:
    """Relative folder -> file names with one of ``exts``, two levels deep."""
    out: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if len(rel.parts) < 2 else []
        names = sorted(f for f in filenames if ext_of(f).lower() in exts)
        if names:
            out[rel.as_posix()] = names
    return out


def _best_pair(folders: dict[str, list[str]]) -> tuple[str, str, str, int] | None:
    """(folder A, folder B, suffix, matches): B's stems are A's stems + suffix, most matches."""
    best = None
    keys = sorted(folders)
    for a in keys:
        stems_a = {stem_of(f) for f in folders[a]}
        for b in keys:
            if a == b:
                continue
            stems_b = {stem_of(f) for f in folders[b]}
            for suf in MASK_SUFFIXES:
                n = sum(1 for s in stems_a if s + suf in stems_b)
                if n and (best is None or n > best[3]):
                    best = (a, b, suf, n)
    return best


def _sample_arrays(root: Path, folder: str, names: list[str], volumes: bool, n: int) -> list[np.ndarray]:
    """Up to ``n`` files spread over ``names``, read as masks (volumes through SimpleITK); an
    unreadable sample says nothing either way and is left out."""
    out = []
    for name in names[:: max(1, len(names) // n)][:n]:
        p = root / folder / name
        try:
            if volumes:
                out.append(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))
            else:
                out.append(read_mask(p))
        except Exception:  # noqa: BLE001
            continue
    return out


def _mask_score(root: Path, folder: str, names: list[str], volumes: bool) -> float:
    """How mask-like a folder's files are: the share of samples with few distinct values."""
    sample = _sample_arrays(root, folder, names, volumes, 4)
    hits = 0
    for a in sample:
        values = np.unique(a)
        mid = float(np.mean((a > 0.15 * a.max()) & (a < 0.85 * a.max()))) if a.max() > 0 else 0.0
        hits += len(values) <= 16 or mid < 0.02
    return hits / max(1, len(sample))


def _mask_classes(root: Path, folder: str, names: list[str], volumes: bool) -> list[str]:
    top = 0
    for a in _sample_arrays(root, folder, names, volumes, 8):
        values = np.unique(a)
        if len(values) <= 16 and values.max() < 32:
            top = max(top, int(values.max()))
    if top <= 1:
        return ["background", "foreground"]
    return ["background", *(f"class_{i}" for i in range(1, top + 1))]


def _segmentation(root: Path) -> Inferred:
    vols = _file_folders(root, VOLUME_EXT)
    volumes = bool(vols)
    folders = vols or _file_folders(root, IMAGE_EXT)
    pair = _best_pair(folders)
    if pair is None:
        raise UserError("found no two folders whose files pair by name (images/ + masks/, any names)", path=root, fix="write data.options.images and masks by hand (see `lvmbench readers paired_images`)")
    a, b, suf, n = pair
    sa, sb = _mask_score(root, a, folders[a], volumes), _mask_score(root, b, folders[b], volumes)
    found = [f"{n} pairs: {a}/ with {b}/ (file stems{' + ' + repr(suf) if suf else ''})"]
    image_dir, mask_dir = a, b
    if suf == "" and sa > sb:  # the pixels say a holds the masks: its name lies
        image_dir, mask_dir = b, a
        found.append(f"{a}/ holds the masks (its files have few grey levels) and {b}/ the images, whatever their names say")
    img_ext = Counter(ext_of(f) for f in folders[image_dir]).most_common(1)[0][0]
    mask_ext = Counter(ext_of(f) for f in folders[mask_dir]).most_common(1)[0][0]
    prefix = lambda d: "" if d in (".", "") else f"{d}/"  # noqa: E731
    images = f"{prefix(image_dir)}*{img_ext}"
    classes = _mask_classes(root, mask_dir, folders[mask_dir], volumes)
    todo = ["no patient/video information: each case is its own group; set data.options.group (regex, mapping file or numeric ranges) if cases share patients or videos"]
    if len(classes) > 2:
        todo.append(f"name the classes: the masks hold values up to {len(classes) - 1}, written as {', '.join(classes[1:])}")
    split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "stratify": False, "group_by": "volume" if volumes else "case"}
    if volumes:
        nifti = all(ext_of(f).lower().startswith(".nii") for fs in (folders[image_dir], folders[mask_dir]) for f in fs)
        reader = "nifti_pairs" if nifti else "volume_pairs"
        opts = {"images": images, "label": f"{prefix(mask_dir)}{{stem}}{suf}{mask_ext}", "slice_axis": 2}
        todo.append("check slice_axis (the stored axis the 2D network slices along; 2 = axial for most scans)")
        return Inferred(reader, opts, classes, "3d-slicewise", split, todo, found)
    opts = {"images": images, "masks": f"{prefix(mask_dir)}{{stem}}{suf}{mask_ext}", "id": "{stem}"}
    return Inferred("paired_images", opts, classes, "2d", split, todo, found)


# -- detection ----------------------------------------------------------------------------------


def _detection(root: Path) -> Inferred:
    for path in sorted(root.glob("*.json")) + sorted(root.glob("*/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data):
            index = FileIndex(root, IMAGE_EXT)
            names = [im.get("file_name", "") for im in data["images"][:20]]
            found = [index.by_name.get(Path(n).name, [None])[0] for n in names]
            folder = Counter(str(Path(f).parent) for f in found if f).most_common(1)
            images = folder[0][0] if folder and folder[0][0] != "." else ""
            classes = [str(c["name"]) for c in sorted(data["categories"], key=lambda c: c.get("id", 0))]
            opts = {"annotations": path.relative_to(root).as_posix(), **({"images": images} if images else {})}
            return Inferred("coco", opts, classes, split={"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "stratify": False, "group_by": "case"},
                            todo=["no patient information: each image is its own group"], found=[f"COCO file {path.name}: {len(data['images'])} images, {len(classes)} categories"])
    xmls = sorted(root.glob("**/*.xml"))[:2000]
    if xmls:
        names: set[str] = set()
        for x in xmls[:300]:
            try:
                names.update((o.findtext("name") or "").strip() for o in ET.parse(x).getroot().findall("object"))
            except (ET.ParseError, OSError):
                continue
        ann = xmls[0].parent.relative_to(root).as_posix()
        index = FileIndex(root, IMAGE_EXT)
        img = next((index.by_name[n][0] for x in xmls[:20] for n in [x.stem + e for e in IMAGE_EXT] if n in index.by_name), None)
        opts: dict[str, Any] = {"annotations": ann, "images": str(Path(img).parent) if img else "JPEGImages"}
        sets = root / "ImageSets" / "Main"
        lists = [s for s in ("train", "val", "test", "trainval") if (sets / f"{s}.txt").is_file()]
        if {"train", "val", "test"} <= set(lists):
            opts["sets"] = ["train", "val", "test"]
            split = {"source": "publisher", "map": {"train": "train", "val": "val", "test": "test"}, "group_by": "case"}
        else:
            opts["sets"] = []
            split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "stratify": False, "group_by": "case"}
        return Inferred("voc", opts, sorted(n for n in names if n), split=split, todo=["no patient information: each image is its own group"], found=[f"{len(xmls)} VOC XML files in {ann}/"])
    for path in _tables(root):
        try:
            table = read_table(path)
        except UserError:
            continue
        low = {c.lower(): c for c in table.columns}
        for cols, fmt in ((("xmin", "ymin", "xmax", "ymax"), "xyxy"), (("x_min", "y_min", "x_max", "y_max"), "xyxy"), (("x1", "y1", "x2", "y2"), "xyxy"), (("x", "y", "w", "h"), "xywh"), (("x", "y", "width", "height"), "xywh")):
            if all(c in low for c in cols):
                index = FileIndex(root, IMAGE_EXT)
                hit = _image_column(table, index, root)
                if hit is None:
                    continue
                label = _pick(table, LABEL_NAMES + ("class_name", "name"), lambda c: True)
                opts = {"table": path.name, "image": hit[1], "boxes": [low[c] for c in cols], "box_format": fmt}
                classes = ["object"]
                if label is not None:
                    opts["label"] = label
                    classes = sorted({r[label] for r in table.rows if r[label]}, key=_natural)
                return Inferred("csv_boxes", opts, classes, split={"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "stratify": False, "group_by": "case"},
                                todo=["no patient information: each image is its own group"], found=[f"box table {path.name}: columns {', '.join(opts['boxes'])}"])
    raise UserError("found no COCO JSON, VOC XML or box table", path=root, fix="write data.reader and data.options by hand (see `lvmbench readers`)")
