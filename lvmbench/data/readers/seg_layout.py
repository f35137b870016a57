"""File-name layouts for segmentation readers, configured from ``task.yaml`` options.

A layout is an ``images`` glob (or list of globs) relative to the dataset folder, an optional regular
expression ``pattern`` with named groups applied to each image's relative path, and *templates*
(``str.format`` strings) that build the paired files, the case id and the patient/volume group from
those groups. Every template may use ``{name}`` (file name), ``{stem}`` (name without extension,
``.nii.gz`` counted as one), ``{parent}`` (folder of the image, relative) and ``{rel}`` (relative
path), plus the pattern's groups. A template with glob characters (``*``, ``?``) may match several
files (BUSI's ``_mask.png`` and ``_mask_1.png``). Only the template's own glob characters count:
the fields filled in (file names such as ``ISIC_000000[1].jpg``) and the dataset folder are
escaped, so a name with brackets pairs with its own mask, not with ``ISIC_0000001``'s.
"""

from __future__ import annotations

import glob as globlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from lvmbench.data.cases import Issue
from lvmbench.data.contained import LINK_FIX, OUTSIDE, glob_inside, stays_inside
from lvmbench.errors import DataError, UserError

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def stem_of(name: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name.rsplit(".", 1)[0] if "." in name else name


def as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class Layout:
    """Finds images and formats the templates that name their paired files."""

    def __init__(self, root: Path, images: str | Sequence[str], pattern: str | None = None, exclude: Iterable[str] = (), dirs: bool = False):
        self.root = root
        self.dirs = dirs  # a folder counts as one file (a DICOM series)
        self.images = as_list(images)
        if not self.images:
            raise UserError("segmentation reader needs an 'images' glob", fix="set data.options.images in the task (e.g. images/*.jpg)")
        try:
            self.pattern = re.compile(pattern) if pattern else None
            self.exclude = [re.compile(e) for e in exclude]
        except re.error as e:
            raise UserError(f"invalid regular expression in the task's data options ({e})", fix="check data.options.pattern/exclude") from None

    def exists(self, rel: str) -> bool:
        p = self.root / rel
        return p.is_file() or (self.dirs and p.is_dir())

    def fields(self, rel: str) -> dict[str, str] | None:
        """Template fields of one image path, or None when the path does not fit the layout."""
        name = rel.rsplit("/", 1)[-1]
        out = {"name": name, "stem": stem_of(name), "parent": rel.rsplit("/", 1)[0] if "/" in rel else "", "rel": rel}
        if self.pattern is not None:
            m = self.pattern.fullmatch(rel)
            if m is None:
                return None
            out.update({k: v for k, v in m.groupdict().items() if v is not None})
        return out

    def glob(self, pattern: str, recursive: bool = False) -> list[str]:
        """Relative paths matching ``pattern`` under the dataset folder (whose own name may hold
        glob characters: it is never part of the pattern). ``recursive``: ``**`` spans folders,
        following the links placed in the dataset folder once each (a link loop cannot explode)."""
        if recursive:
            return glob_inside(self.root, pattern)
        if not stays_inside(pattern):
            raise DataError(f"glob '{pattern}' {OUTSIDE}", path=self.root, fix=LINK_FIX)
        return globlib.glob(pattern, root_dir=self.root)

    def excluded(self, rel: str) -> bool:
        return any(e.search(rel) for e in self.exclude)

    def scan(self) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
        """(image path, fields) for every image that fits, sorted; and the globbed paths that do not."""
        found: set[str] = set()
        for g in self.images:
            for rel in self.glob(g, recursive=True):
                if self.exists(rel):
                    found.add(Path(rel).as_posix())
        matched, unmatched = [], []
        for rel in sorted(found):
            if self.excluded(rel):
                continue
            f = self.fields(rel)
            if f is None:
                unmatched.append(rel)
            else:
                matched.append((rel, f))
        return matched, unmatched

    def resolve(self, template: str | Sequence[str], fields: dict[str, str], option: str) -> list[str]:
        """Relative paths the template (or the first of several alternatives that exists) names."""
        escaped = {k: globlib.escape(v) for k, v in fields.items()}
        for t in as_list(template):
            path = fill(t, fields, option)
            pattern = fill(t, escaped, option)
            if globlib.has_magic(fill(t, {k: "x" for k in fields}, option)):  # the template's own wildcards
                hits = sorted(Path(p).as_posix() for p in self.glob(pattern) if self.exists(p))
                hits = [h for h in hits if not self.excluded(h)]
                if hits:
                    return hits
            elif self.exists(path):
                return [path]
        return []

    def candidates(self, template: str | Sequence[str], near: Iterable[str] | None = None) -> set[str]:
        """Every existing file the template could name (fields -> '*'), to find unpaired files.

        ``near``: paired files already found; only candidates in their folders count, so a layout
        that reads one of several side-by-side releases (MMWHS ct_train/ next to mr_train/) does not
        report the other release's files as unpaired.
        """
        out: set[str] = set()
        for t in as_list(template):
            pat = _FIELD.sub("*", t)
            out.update(Path(p).as_posix() for p in self.glob(pat) if self.exists(p))
        out = {o for o in out if not self.excluded(o)}
        if near is not None:
            folders = {str(Path(p).parent) for p in near}
            out = {o for o in out if str(Path(o).parent) in folders}
        return out


def fill(template: str, fields: dict[str, str], option: str) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as e:
        raise UserError(
            f"data option '{option}' uses field {e} that the layout does not define (have: {', '.join(sorted(fields))})",
            fix="add a named group to data.options.pattern or fix the template",
        ) from None


def unpaired_issues(root: Path, paths: Iterable[str], problem: str, fix: str) -> list[Issue]:
    return [Issue(str(root / p), problem, fix, fatal=False) for p in sorted(paths)]


def require_cases(cases: list, root: Path, what: str) -> None:
    if not cases:
        raise DataError(f"no {what} found that fit the task's layout", path=root, fix="check --data-root and data.options (images glob, pattern) in the task")
