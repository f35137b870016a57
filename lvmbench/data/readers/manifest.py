"""Classification from a manifest table: one row per image (or several images per row), the label in
a column (names or integers, mapped through ``label_map``) or in one-hot columns, optional patient /
lesion group and publisher split columns. CSV, TSV and XLSX (through pandas).

    data:
      reader: manifest
      dir: HAM10000
      options:
        table: HAM10000_metadata.csv
        image: "HAM10000_images_part_*/{image_id}.jpg"   # a column name, or a template over columns
        label: dx
        label_map: {nv: nevus, mel: melanoma, bkl: keratosis}
        group: {column: lesion_id}

Bad rows are verify issues, one line each: an image that is not there (a warning, the row is left
out; ``missing: error`` makes it fatal), a label that is not a class (fatal, one line per distinct
value with the nearest class name), two rows naming one case (fatal).
"""

from __future__ import annotations

import glob as globlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from lvmbench.data.cases import READERS, Case, DatasetReader, Issue
from lvmbench.data.contained import InsidePath
from lvmbench.data.imageio import read_image
from lvmbench.data.reader_options import Bool, Int, ReaderOptions, Str, StrOrList
from lvmbench.data.readers.detection import read_dicom
from lvmbench.data.readers.groups import GroupResolver, GroupSource
from lvmbench.data.readers.seg_layout import _FIELD
from lvmbench.data.readers.tables import FileIndex, Table, read_table
from lvmbench.errors import DataError, UserError
from lvmbench.registry import suggest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom")


class TableOptions(ReaderOptions):
    table: InsidePath = Field(description="the table, relative to the dataset folder (.csv, .tsv, .txt, .xlsx)")
    sheet: Str | Int | None = Field(None, description="XLSX: sheet name or index (default: the first)")
    sep: Str | None = Field(None, description="column separator (default: by file suffix; .txt sniffed)")
    header: Bool = Field(True, description="false: the table has no header row; its columns are then named col1, col2, col3 ...")
    image: StrOrList = Field(description="column(s) holding image paths, or template(s) over columns such as '{image_id}.jpg'; a list gives several images per row")
    images: InsidePath = Field("", description="folder the image paths are relative to (default: the dataset folder); glob characters in a path pick the first match")
    group: GroupSource | None = Field(None, description="patient/lesion group: {column: NAME}, a template over columns, or a group source (default: the row)")
    split: Str | None = Field(None, description="column holding the publisher split (for split.source: publisher)")
    classes: list[Str] = Field(default_factory=list, description="the task's classes (filled in from the task)")


class ManifestOptions(TableOptions):
    id: Str | None = Field(None, description="column or template giving the case id (default: the image path)")
    label: Str | None = Field(None, description="column holding the label: a class name, a label_map key or a class index")
    label_columns: list[Str] | None = Field(None, description="one-hot columns, one per class in the task's class order (instead of label)")
    label_map: dict[Str | Int, Str | Int] = Field(default_factory=dict, description="table value -> class name or index")
    skip_labels: list[Str] = Field(default_factory=list, description="label values whose rows are left out (e.g. '' or 'unknown')")
    missing: Literal["warn", "error"] = Field("warn", description="an image the table lists but the folder lacks: warn (row left out) | error")
    image_mode: Literal["RGB", "L"] = Field("RGB", description="decode images as RGB or greyscale")

    @model_validator(mode="after")
    def _one_label(self) -> "ManifestOptions":
        if (self.label is None) == (self.label_columns is None):
            raise ValueError("give exactly one of label (a column) and label_columns (one-hot columns)")
        return self


def columns_of(template: str, columns: list[str]) -> list[str]:
    """The columns a column-or-template option reads (a bare column name reads itself)."""
    return [template] if template in columns else _FIELD.findall(template)


def fill_row(template: str, row: dict[str, str], table: Table, option: str, escape: bool = False) -> str:
    if template in row:  # a bare column name (any characters, e.g. '0001_B.png' of a headerless table)
        return row[template]
    try:
        return template.format(**({k: globlib.escape(v) for k, v in row.items()} if escape else row))
    except KeyError as e:
        col = str(e).strip("'")
        raise DataError(f"data option '{option}' uses column '{col}', which the table lacks" + (f"; did you mean '{h}'?" if (h := suggest(col, table.columns)) else ""), path=table.path, fix=f"use the table's columns ({', '.join(table.columns[:10])})") from None
    except (IndexError, ValueError) as e:
        raise UserError(f"data option '{option}' is not a valid template ({e})", fix="write columns as {name}") from None


class TableReader(DatasetReader):
    """Shared parts of the table readers: the table, image lookup, groups, row issues."""

    Options = TableOptions

    def __init__(self, root: str | Path, **options: Any):
        super().__init__(root, **options)
        self.opts = self.Options.model_validate({**getattr(self, "defaults", {}), **options})
        self._issues: list[Issue] = []

    @property
    def table_path(self) -> Path:
        return self.root / self.opts.table

    def load_table(self) -> Table:
        self.require_root("point --data-root at the folder that holds the dataset (see `lvmbench tasks`)")
        return read_table(self.table_path, self.opts.sheet, self.opts.sep, self.opts.header)

    def image_templates(self, table: Table) -> list[str]:
        items = [self.opts.image] if isinstance(self.opts.image, str) else list(self.opts.image)
        for t in items:
            for col in columns_of(t, table.columns):
                table.require(col, "data.options.image")
        return items

    def image_index(self) -> tuple[Path, FileIndex]:
        base = self.root / self.opts.images if self.opts.images else self.root
        if not base.is_dir():
            raise DataError("image folder not found", path=base, fix="check data.options.images in the task")
        return base, FileIndex(base, IMAGE_SUFFIXES, within=self.root)

    def find_image(self, base: Path, index: FileIndex, template: str, row: dict[str, str], table: Table) -> tuple[str | None, str]:
        """(path relative to the dataset folder or None, what the row named)."""
        magic = globlib.has_magic(_FIELD.sub("x", template))
        named = fill_row(template, row, table, "data.options.image", escape=magic)
        hit = index.find(named)
        if hit is None:
            return None, (base / named).as_posix()
        return (base / hit).relative_to(self.root).as_posix(), named

    def groups(self, table: Table) -> GroupResolver:
        g = self.opts.group
        if g is not None and g.column is not None:
            table.require(g.column, "data.options.group.column")
        return GroupResolver(g, self.root, table.columns)

    def check_split(self, table: Table) -> None:
        if self.opts.split is not None:
            table.require(self.opts.split, "data.options.split")

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        return list(self._issues)

    def load_image(self, case: Case) -> np.ndarray:
        path = self.root / case.image
        if path.suffix.lower() in (".dcm", ".dicom"):
            grey = read_dicom(path)
            return grey if getattr(self.opts, "image_mode", "RGB") == "L" else np.repeat(grey[..., None], 3, axis=2)
        return read_image(path, getattr(self.opts, "image_mode", "RGB"))


@READERS.register("manifest")
class Manifest(TableReader):
    """Classification from a table of image paths and labels (CSV/TSV/XLSX)."""

    kind = "classification"
    Options = ManifestOptions
    example = {
        "reader": "manifest",
        "dir": "HAM10000",
        "options": {"table": "HAM10000_metadata.csv", "image": "HAM10000_images_part_*/{image_id}.jpg", "label": "dx", "label_map": {"nv": "nevus", "mel": "melanoma"}, "group": {"column": "lesion_id"}},
    }

    def cases(self) -> list[Case]:
        o = self.opts
        table = self.load_table()
        templates = self.image_templates(table)
        if o.label is not None:
            table.require(o.label, "data.options.label")
        for c in o.label_columns or []:
            table.require(c, "data.options.label_columns")
        if o.label_columns is not None and o.classes and len(o.label_columns) != len(o.classes):
            raise DataError(f"data.options.label_columns has {len(o.label_columns)} columns for the task's {len(o.classes)} classes", path=table.path, fix="list one column per class, in the task's class order")
        self.check_split(table)
        id_t = o.id or None
        for col in columns_of(id_t, table.columns) if id_t else []:
            table.require(col, "data.options.id")
        base, index = self.image_index()
        groups = self.groups(table)
        issues: list[Issue] = []
        unknown: dict[str, list[int]] = {}
        seen: dict[str, int] = {}
        dups: list[str] = []
        out: list[Case] = []
        for i, row in enumerate(table.rows):
            label = self._label(row, table, i, unknown)
            if label is None:
                continue
            several = len(templates) > 1
            for t in templates:
                if several and not any(row.get(c) for c in columns_of(t, table.columns)):
                    continue  # an empty cell of a multi-image row: that view is absent
                rel, named = self.find_image(base, index, t, row, table)
                if rel is None:
                    issues.append(Issue(named, f"listed in {table.path.name} ({table.row_name(i)}) but the image is missing; row left out", "restore the image or remove the row", fatal=o.missing == "error"))
                    continue
                cid = fill_row(id_t, row, table, "data.options.id") + (f"/{Path(rel).name}" if several else "") if id_t else rel
                if cid in seen:
                    dups.append(f"'{cid}' ({table.row_name(seen[cid])} and {table.row_name(i)})")
                    continue
                seen[cid] = i
                fields = {**row, "id": cid, "name": Path(rel).name, "stem": Path(rel).stem, "rel": rel, "row": str(i + 2)}
                default = f"row{i + 2}" if several else cid
                meta: dict[str, Any] = {"row": i + 2}
                if o.split is not None:
                    meta["split"] = row[o.split]
                out.append(Case(id=cid, group=groups(fields, default), image=rel, label=label, files=(rel,), meta=meta))
        for value, rows in unknown.items():
            names = ", ".join(table.row_name(r) for r in rows[:3]) + (f" and {len(rows) - 3} more" if len(rows) > 3 else "")
            hint = suggest(value, [str(k) for k in o.label_map] + list(o.classes))
            issues.append(Issue(str(table.path), f"label '{value}' ({names}) is not one of the task's classes ({', '.join(o.classes)})" + (f"; did you mean '{hint}'?" if hint else ""), "correct the table, map the value in data.options.label_map, or skip it with data.options.skip_labels"))
        if dups:
            issues.append(Issue(str(table.path), f"{len(dups)} case id(s) listed twice: {', '.join(dups[:3])}" + (" ..." if len(dups) > 3 else ""), "list each image once (or make data.options.id unique); only the first row of each is used"))
        self._issues = issues + groups.issues(table.path)
        if not out:
            raise DataError("no labelled images found from the table's rows", path=table.path, fix="check data.options.image/images (and the 'missing' and 'label' lines of `lvmbench data verify`)")
        return out

    def _label(self, row: dict[str, str], table: Table, i: int, unknown: dict[str, list[int]]) -> int | None:
        o = self.opts
        if o.label_columns is not None:
            try:
                hot = [float(row[c] or 0) for c in o.label_columns]
            except ValueError:
                unknown.setdefault("non-numeric one-hot value", []).append(i)
                return None
            top = [k for k, v in enumerate(hot) if v == max(hot)]
            if max(hot) <= 0 or len(top) != 1:
                unknown.setdefault("none or several one-hot columns set", []).append(i)
                return None
            return top[0]
        value = row[str(o.label)]
        if value in o.skip_labels:
            return None
        mapped: Any = value
        for k, v in o.label_map.items():
            if str(k) == value:
                mapped = v
                break
        if isinstance(mapped, str) and mapped in o.classes:
            return o.classes.index(mapped)
        if isinstance(mapped, str) and mapped.isdigit():
            mapped = int(mapped)  # a class index, as integer labels are written
        if isinstance(mapped, int) and (not o.classes or 0 <= mapped < len(o.classes)):
            return mapped
        return self._bad(value, i, unknown)

    @staticmethod
    def _bad(value: str, i: int, unknown: dict[str, list[int]]) -> None:
        unknown.setdefault(value, []).append(i)
        return None
