"""Detection from a table of boxes (CSV, TSV, XLSX): one row per box, rows of one image grouped.

    data:
      reader: csv_boxes
      dir: wheat
      options:
        table: train.csv
        image: "images/{image_id}.jpg"   # a column, or a template over columns
        label: class                     # column (leave out for a one-class task)
        boxes: [x, y, w, h]
        box_format: xywh

A row whose box cells are empty (or whose label is one of ``empty_labels``) lists an image without
objects, a negative case. Coordinates are pixels of the stored image (``normalized: true``: fractions
of its width and height). Boxes with no area are dropped and reported, as in every box reader.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lvmbench.data.cases import READERS, Box, Case, Issue
from lvmbench.data.imageio import image_size
from lvmbench.data.reader_options import Bool, Str
from lvmbench.data.readers.detection import BoxReader
from lvmbench.data.readers.manifest import TableOptions, TableReader
from lvmbench.errors import DataError


class CsvBoxesOptions(TableOptions):
    label: Str | None = Field(None, description="column holding each box's class (default: the task's only class)")
    aliases: dict[Str, Str] = Field(default_factory=dict, description="table class name -> task class")
    boxes: list[Str] = Field(default_factory=lambda: ["xmin", "ymin", "xmax", "ymax"], min_length=4, max_length=4, description="the four coordinate columns, in box_format order")
    box_format: Literal["xyxy", "xywh", "cxcywh"] = Field("xyxy", description="xyxy: corners | xywh: top-left + size (COCO) | cxcywh: centre + size (YOLO)")
    normalized: Bool = Field(False, description="coordinates are fractions of the image width/height")
    empty_labels: list[Str] = Field(default_factory=lambda: [""], description="label values of rows that list an image without objects")


@READERS.register("csv_boxes")
class CsvBoxes(TableReader, BoxReader):
    """Boxes from a table: image column/template, label column, four coordinate columns."""

    kind = "detection"
    Options = CsvBoxesOptions
    example = {
        "reader": "csv_boxes",
        "dir": "wheat",
        "options": {"table": "train.csv", "image": "train/{image_id}.jpg", "boxes": ["x", "y", "w", "h"], "box_format": "xywh", "group": {"column": "source"}},
    }

    def cases(self) -> list[Case]:
        o = self.opts
        self._dropped = []
        table = self.load_table()
        templates = self.image_templates(table)
        if len(templates) != 1:
            raise DataError("csv_boxes reads one image per row", path=table.path, fix="set data.options.image to one column or template")
        for c in o.boxes:
            table.require(c, "data.options.boxes")
        if o.label is not None:
            table.require(o.label, "data.options.label")
        elif len(self.classes) > 1:
            raise DataError(f"the task has {len(self.classes)} classes and data.options.label names no column", path=table.path, fix="set data.options.label to the column holding each box's class")
        self.check_split(table)
        base, index = self.image_index()
        groups = self.groups(table)
        issues: list[Issue] = []
        per_image: dict[str, dict[str, Any]] = {}
        for i, row in enumerate(table.rows):
            rel, named = self.find_image(base, index, templates[0], row, table)
            if rel is None:
                issues.append(Issue(named, f"listed in {table.path.name} ({table.row_name(i)}) but the image is missing; row left out", "restore the image or remove its rows", fatal=False))
                continue
            entry = per_image.setdefault(rel, {"boxes": [], "row": i, "fields": row})
            name = row[o.label] if o.label is not None else (self.classes[0] if self.classes else "object")
            cells = [row[c] for c in o.boxes]
            if name in o.empty_labels or not any(cells):
                continue
            try:
                vals = [float(v) for v in cells]
            except ValueError:
                raise DataError(f"{table.row_name(i)}: box {cells} is not four numbers", path=table.path, fix="correct the row (empty box cells mark an image without objects)") from None
            where = f"{table.path} ({table.row_name(i)})"
            entry["boxes"].append((self.label_of(name, where), vals, where))
        out = []
        for rel, entry in per_image.items():
            row, i = entry["fields"], entry["row"]
            size = image_size(self.root / rel) if o.normalized else None
            boxes = []
            for label, vals, where in entry["boxes"]:
                box = self._box(vals, size, label, where)
                if box is not None:
                    boxes.append(box)
            meta: dict[str, Any] = {"row": i + 2}
            if o.split is not None:
                meta["split"] = row[o.split]
            p = Path(rel)
            fields = {**row, "id": rel, "name": p.name, "stem": p.stem, "rel": rel}
            out.append(Case(id=rel, group=groups(fields, rel), image=rel, target=tuple(boxes), files=(rel,), meta=meta))
        self._issues = issues + groups.issues(table.path)
        if not out:
            raise DataError("no image of the table was found", path=table.path, fix="check data.options.image and data.options.images")
        return sorted(out, key=lambda c: c.id)

    def _box(self, v: list[float], size: tuple[int, int] | None, label: int, where: str) -> Box | None:
        a, b, c, d = v
        fmt = self.opts.box_format
        if fmt == "xywh":
            x1, y1, x2, y2 = a, b, a + c, b + d
        elif fmt == "cxcywh":
            x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
        else:
            x1, y1, x2, y2 = a, b, c, d
        if size is not None:
            h, w = size
            x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
        if not all(math.isfinite(x) for x in (x1, y1, x2, y2)):
            x2 = x1  # reported as degenerate below
        return self.make_box(x1, y1, x2, y2, label, where)

    def load_target(self, case: Case) -> list[Box]:
        return list(case.target or ())

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        return list(self._issues) + list(self._dropped)
