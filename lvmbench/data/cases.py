"""Cases and the reader contract.

A reader turns one publisher layout into a list of ``Case`` records (cheap: file names only) and
decodes one case on demand. Readers are configured from ``task.yaml`` (``data.reader`` +
``data.options``, typed by the reader's ``Options`` model, see ``reader_options``) and registered by
name with ``@READERS.register("name")`` or, from a plugin package, through the ``lvmbench.readers``
entry-point group (the entry point names a ``DatasetReader`` subclass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lvmbench.data.reader_options import ReaderOptions, options_model, validate_options
from lvmbench.errors import DataError, UserError
from lvmbench.registry import Registry, import_members, load_entry_points


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    label: int


@dataclass(frozen=True)
class Case:
    """One unit of data: an image (2D) or a volume (3D) with its target.

    ``id`` is unique within the dataset and stable across machines (derived from file names);
    ``group`` is the patient/volume key splits are grouped by; ``label`` is the class index for
    classification (None otherwise); ``files`` lists every file the case reads (for verify,
    the decoded cache key and leakage audits); ``meta`` carries publisher split, site, etc.
    """

    id: str
    group: str
    image: str
    target: Any = None
    label: int | None = None
    files: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Issue:
    """A problem found by ``verify``: which file, what is wrong, how to fix it."""

    path: str
    problem: str
    fix: str
    fatal: bool = True

    def line(self) -> str:
        return f"{self.path}: {self.problem}; fix: {self.fix}"


def checked_options(defaults: dict[str, Any], options: dict[str, Any], allowed: set[str], reader: str, required: str, required_fix: str) -> dict[str, Any]:
    """A reader's options (its preset's defaults overlaid by the task's), refusing unknown names
    and a missing required one."""
    opts = {**defaults, **options}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise UserError(f"unknown data option(s) {unknown} for a {reader}", fix=f"use only {sorted(allowed)}")
    if required not in opts:
        raise UserError(f"{reader} needs '{required}'", fix=required_fix)
    return opts


def issue_from(e: UserError, fallback: Path | str, fix: str = "see the message") -> Issue:
    """The error as a verify issue: its file (else ``fallback``), the problem without the path
    prefix, its fix (else ``fix``)."""
    problem = str(e).split("; fix:")[0]
    if e.path and problem.startswith(f"{e.path}:"):
        problem = problem[len(e.path) + 1 :].strip()
    return Issue(e.path or str(fallback), problem, e.fix or fix)


class DatasetReader:
    """Base class. Subclasses set ``kind`` and implement ``cases``, ``load_image``, ``load_target``.

    ``load_image`` returns HxWxC uint8 for 2D data (C in {1, 3}) and a float32 (D, H, W) array for
    volumes; ``load_target`` returns an int class, an int64 HxW (or DxHxW) label map, or a list of
    ``Box`` in pixel coordinates of the decoded image.
    """

    kind: ClassVar[str] = "classification"
    # every key data.options may hold, typed (None: an older plugin reader, options unchecked)
    Options: ClassVar[type[ReaderOptions] | None] = None
    # one data section that uses the reader, for `lvmbench readers`
    example: ClassVar[dict[str, Any]] = {}
    # what one case is: a split's ``group_by`` equal to it needs no group information (a volume
    # reader's cases are volumes; an image reader needs a group template to know patients)
    case_unit: ClassVar[str] = "image"

    def __init__(self, root: str | Path, **options: Any):
        self.root = Path(root)
        self.options = options

    def require_root(self, hint: str) -> None:
        if not self.root.is_dir():
            raise DataError("dataset folder not found", path=self.root, fix=hint)

    def cases(self) -> list[Case]:
        raise NotImplementedError

    def load_image(self, case: Case) -> np.ndarray:
        raise NotImplementedError

    def load_target(self, case: Case) -> Any:
        return case.label

    def check(self, case: Case) -> list[Issue]:
        """Per-case checks for ``lvmbench data verify``: decode everything, report problems."""
        try:
            img = self.load_image(case)
            tgt = self.load_target(case)
        except DataError as e:
            return [issue_from(e, case.image, "replace the file")]
        issues: list[Issue] = []
        if isinstance(tgt, np.ndarray) and tgt.shape != img.shape[: tgt.ndim]:
            issues.append(
                Issue(case.image, f"image {img.shape[: tgt.ndim]} and mask {tgt.shape} differ in size", "re-export the mask at the image size")
            )
        return issues

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        """Whole-dataset checks (unpaired files, counts); per-layout readers extend this."""
        return []


def _load_readers(reg: Registry[type[DatasetReader]]) -> None:
    import_members("lvmbench.data.readers")
    load_entry_points(reg, "lvmbench.readers", _reader_class)


def _reader_class(name: str, obj: object) -> type[DatasetReader]:
    if not (isinstance(obj, type) and issubclass(obj, DatasetReader)):
        raise UserError(f"plugin reader '{name}' is not a DatasetReader subclass ({obj!r})", fix="point the lvmbench.readers entry point at a class deriving from lvmbench.data.cases.DatasetReader")
    return obj


READERS: Registry[type[DatasetReader]] = Registry("reader", _load_readers)


def make_reader(name: str, root: str | Path, options: dict[str, Any] | None = None) -> DatasetReader:
    """The reader on ``root``; its options are checked against its typed model first."""
    cls = READERS.get(name)
    validate_options(name, cls, options or {})
    return cls(root, **(options or {}))


def validate_task_readers(spec: Any) -> None:
    """The reader options of a task, of each suite profile and of each out-of-distribution set
    validate (called when a task loads)."""
    path = (spec.folder / "task.yaml") if spec.folder else None

    def check(reader: str, options: dict[str, Any], where: str) -> None:
        try:
            cls = READERS.get(reader)
        except UserError as e:
            raise UserError(f"task '{spec.id}': {where}: {e}", path=path, fix="use a registered reader (see `lvmbench readers`)") from None
        validate_options(reader, cls, _with_classes(cls, options, spec.classes), where=f"{where}.options" if not where.endswith("options") else where, task_id=spec.id, path=path)

    variants = [("", spec)] + [(f"profiles.{s}.", spec.for_suite(s)) for s in spec.profiles]
    for prefix, s in variants:
        check(s.data.reader, s.data.options, f"{prefix}data.options")
        for i, o in enumerate(s.ood):
            same = o.reader is None or o.reader == s.data.reader
            options = {**(s.data.options if same else {}), **o.options}
            if o.sites:
                options["sites"] = list(o.sites)
            check(o.reader or s.data.reader, options, f"{prefix}ood[{i}] ({o.name}).options")


def _with_classes(cls: type, options: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    fields = getattr(options_model(cls), "model_fields", {})
    if "classes" in fields and "classes" not in options:
        return {**options, "classes": list(classes)}
    return options
