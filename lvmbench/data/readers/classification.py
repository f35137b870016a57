"""Classification layouts: class-per-folder trees (Kaggle brain tumour, ImageFolder) and FGADR."""

from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from lvmbench.data.cases import READERS, Case, DatasetReader, Issue
from lvmbench.data.contained import InsidePath
from lvmbench.data.imageio import read_image
from lvmbench.data.reader_options import Bool, ReaderOptions, Str
from lvmbench.data.readers.groups import GroupResolver, GroupSource
from lvmbench.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif"}


class ClassFoldersOptions(ReaderOptions):
    splits: list[InsidePath] = Field(default_factory=lambda: ["Training", "Testing"], description="publisher split folders above the class folders; [] = class folders directly in the dataset folder")
    classes: list[Str] = Field(default_factory=list, description="the task's classes (filled in from the task)")
    aliases: dict[Str, Str] = Field(default_factory=dict, description="folder name -> class, for other spellings of a class")
    group_identical: Bool | Literal["bytes", "pixels"] = Field(False, description="identical files share a group: bytes (or true) | pixels (re-encoded copies too)")
    group: GroupSource | None = Field(None, description="patient/lesion group: template over name, stem, parent, rel, class, split; or column/regex/file/ranges (see Group sources)")


@READERS.register("class_folders")
class ClassFolders(DatasetReader):
    """``<root>/<split>/<class>/<image>`` (or ``<root>/<class>/<image>`` with ``splits: []``).

    Options: ``splits`` (publisher split folders, e.g. [Training, Testing]); ``classes`` (task class
    order); ``aliases`` (folder name -> class, for the several published spellings, e.g.
    ``glioma_tumor`` -> ``glioma``); ``group_identical`` (``bytes``/true or ``pixels``: identical
    files share one group, so a grouped split cannot put copies of one image on both sides; the
    Kaggle brain-tumour folders hold such copies); ``group`` (a group source, see ``groups``; default:
    each image is its own group). Case ids are ``<split>/<class-folder>/<file>``.
    """

    kind = "classification"
    Options = ClassFoldersOptions
    example = {"reader": "class_folders", "dir": "derm_folders", "options": {"splits": [], "aliases": {"melanoma_cases": "melanoma"}, "group": {"regex": "^(?P<group>P\\d+)_", "input": "{name}"}}}

    def __init__(self, root, splits=("Training", "Testing"), classes=(), aliases=None, group_identical=False, group=None, **options):
        super().__init__(root, **options)
        self.splits = list(splits)
        self.classes = list(classes)
        self.aliases = dict(aliases or {})
        self.group_identical = "bytes" if group_identical is True else (group_identical or None)
        self.group = GroupSource.model_validate(group) if group is not None else None
        self._group_issues: list[Issue] = []

    def _class_of(self, folder: str) -> int | None:
        name = self.aliases.get(folder, folder)
        return self.classes.index(name) if name in self.classes else None

    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder that holds the dataset (see `lvmbench tasks`)")
        out: list[Case] = []
        bases = [(s, self.root / s) for s in self.splits] if self.splits else [("", self.root)]
        found_any = False
        groups = GroupResolver(self.group, self.root)
        for split, base in bases:
            if not base.is_dir():
                continue
            found_any = True
            for cdir in sorted(p for p in base.iterdir() if p.is_dir()):
                label = self._class_of(cdir.name)
                if label is None:
                    known = ", ".join(self.classes)
                    raise DataError(
                        f"class folder '{cdir.name}' is not one of the task's classes ({known})",
                        path=cdir,
                        fix="rename the folder or add an alias in the task's data.options.aliases",
                    )
                for f in sorted(cdir.iterdir()):
                    if f.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    rel = f.relative_to(self.root).as_posix()
                    fields = {"name": f.name, "stem": f.stem, "parent": cdir.relative_to(self.root).as_posix(), "rel": rel, "class": cdir.name, "split": split}
                    out.append(Case(id=rel, group=groups(fields, rel), image=rel, label=label, files=(rel,), meta={"split": split}))
        if not found_any:
            want = " or ".join(f"'{s}/'" for s in self.splits) or "class folders"
            raise DataError(f"no {want} found in the dataset folder", path=self.root, fix="check --data-root and the dataset layout")
        if not out:
            raise DataError("no images found", path=self.root, fix="check --data-root and the dataset layout")
        self._group_issues = groups.issues(self.root)
        return _group_identical(self.root, out, self.group_identical) if self.group_identical else out

    def load_image(self, case: Case) -> np.ndarray:
        return read_image(self.root / case.image, "RGB")

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        return list(self._group_issues)


def _group_identical(root: Path, cases: list[Case], how: str) -> list[Case]:
    """Cases whose files have the same bytes (``bytes``) or decode to the same pixels (``pixels``:
    catches re-encoded copies, costs one decode per file) get the group of the first (by id)."""
    if how not in ("bytes", "pixels"):
        raise DataError(f"group_identical must be bytes or pixels, not {how!r}", path=root, fix="fix data.options.group_identical in the task")

    def digest(c: Case) -> str:
        if how == "pixels":
            arr = read_image(root / c.image, None)
            return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()
        return hashlib.sha1((root / c.image).read_bytes()).hexdigest()

    ordered = sorted(cases, key=lambda c: c.id)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoders release the GIL
        digests = list(pool.map(digest, ordered))
    first: dict[str, str] = {}
    out = []
    for c, d in zip(ordered, digests):
        group = first.setdefault(d, c.group)
        out.append(c if group == c.group else replace(c, group=group))
    return out


class FGADROptions(ReaderOptions):
    images: InsidePath = Field("Original_Images", description="image folder")
    labels: InsidePath = Field("DR_Seg_Grading_Label.csv", description="grading CSV: name,grade")


@READERS.register("fgadr")
class FGADR(DatasetReader):
    """FGADR Seg-set: ``Original_Images/NNNN_x.png`` with grades 0-4 from a CSV (``name,grade``).

    Options: ``images`` (folder, default ``Original_Images``), ``labels`` (CSV, default
    ``DR_Seg_Grading_Label.csv``).
    """

    kind = "classification"
    Options = FGADROptions
    example = {"reader": "fgadr", "dir": "FGADR", "options": {"images": "Original_Images", "labels": "DR_Seg_Grading_Label.csv"}}

    def __init__(self, root, images="Original_Images", labels="DR_Seg_Grading_Label.csv", **options):
        super().__init__(root, **options)
        self.images = images
        self.labels = labels

    def _grades(self) -> dict[str, int]:
        path = self.root / self.labels
        if not path.is_file():
            raise DataError("grading CSV not found", path=path, fix="place FGADR's grading CSV next to Original_Images/")
        grades: dict[str, int] = {}
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.reader(f)):
                if not row or not row[0].strip():
                    continue
                name, grade = row[0].strip(), row[-1].strip()
                if not grade.isdigit():
                    if i == 0:
                        continue  # header
                    raise DataError(f"line {i + 1}: grade '{grade}' is not an integer 0-4", path=path, fix="correct the CSV")
                grades[Path(name).name] = int(grade)
        return grades

    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder that holds FGADR's Seg-set")
        grades = self._grades()
        img_dir = self.root / self.images
        if not img_dir.is_dir():
            raise DataError("image folder not found", path=img_dir, fix="check data.options.images in the task")
        out = []
        for f in sorted(img_dir.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES or f.name not in grades:
                continue
            rel = f.relative_to(self.root).as_posix()
            out.append(Case(id=f.name, group=f.stem, image=rel, label=grades[f.name], files=(rel,), meta={}))
        if not out:
            raise DataError("no graded images found", path=img_dir, fix="check that the CSV names match the image files")
        return out

    def load_image(self, case: Case) -> np.ndarray:
        return read_image(self.root / case.image, "RGB")

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        grades = self._grades()
        have = {Path(c.image).name for c in cases}
        missing = sorted(set(grades) - have)
        return [
            Issue(str(self.root / self.images / m), "listed in the grading CSV but the image is missing", "restore the image", fatal=False)
            for m in missing
        ]
