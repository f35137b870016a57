"""Detection layouts: COCO JSON, Pascal VOC XML, a table of boxes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from lvmbench.data.readers.tables import FileIndex, read_table
from lvmbench.errors import UserError
from lvmbench.scaffold_infer.classification import image_column, pick, tables
from lvmbench.scaffold_infer.common import IMAGE_EXT, LABEL_NAMES, Inferred, natural


def detection(root: Path) -> Inferred:
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
    for path in tables(root):
        try:
            table = read_table(path)
        except UserError:
            continue
        low = {c.lower(): c for c in table.columns}
        for cols, fmt in ((("xmin", "ymin", "xmax", "ymax"), "xyxy"), (("x_min", "y_min", "x_max", "y_max"), "xyxy"), (("x1", "y1", "x2", "y2"), "xyxy"), (("x", "y", "w", "h"), "xywh"), (("x", "y", "width", "height"), "xywh")):
            if all(c in low for c in cols):
                index = FileIndex(root, IMAGE_EXT)
                hit = image_column(table, index, root)
                if hit is None:
                    continue
                label = pick(table, LABEL_NAMES + ("class_name", "name"), lambda c: True)
                opts = {"table": path.name, "image": hit[1], "boxes": [low[c] for c in cols], "box_format": fmt}
                classes = ["object"]
                if label is not None:
                    opts["label"] = label
                    classes = sorted({r[label] for r in table.rows if r[label]}, key=natural)
                return Inferred("csv_boxes", opts, classes, split={"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "stratify": False, "group_by": "case"},
                                todo=["no patient information: each image is its own group"], found=[f"box table {path.name}: columns {', '.join(opts['boxes'])}"])
    raise UserError("found no COCO JSON, VOC XML or box table", path=root, fix="write data.reader and data.options by hand (see `lvmbench readers`)")
