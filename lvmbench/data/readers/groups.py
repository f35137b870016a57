"""Group sources: which patient, lesion, video or volume a case belongs to.

Grouped splits keep every case of one group on one side, so the group must be right; it rarely sits
in a file name. ``data.options.group`` of the generic readers takes one of:

- a template (``"{patient}"``, ``"child{child}"``): fields of the file layout (``name``, ``stem``,
  ``parent``, ``rel``, a pattern's named groups) or, for table readers, the row's columns;
- ``{column: lesion_id}``: a column of the reader's table (manifest readers);
- ``{regex: '(?P<group>P\\d+)_', input: "{name}"}``: a regular expression searched in ``input`` (a
  template, default ``{stem}``); the named group ``group`` (else the first group, else the whole match);
- ``{file: patients.csv, key: image, value: patient, input: "{stem}"}``: a mapping table (CSV, TSV, XLSX
  or JSON object) from the case's key to its group;
- ``{ranges: [{from: 1, to: 25, group: seq01}, ...], input: "{stem}"}`` (or ``ranges: sequences.csv`` with
  columns from, to, group): the last number in ``input`` (``frame_0012`` -> 12) falls in one range, so
  "frames 1-25 are sequence 1" needs no regular expression.

``unmatched: error`` (default) makes a case without a group a verify error, one line for all of them;
``unmatched: own`` gives such a case its own group.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lvmbench.data.cases import Issue
from lvmbench.data.contained import InsidePath
from lvmbench.data.reader_options import Int, ReaderOptions, Str
from lvmbench.data.readers.seg_layout import fill
from lvmbench.data.readers.tables import column_error, read_table
from lvmbench.errors import DataError, UserError

_NUMBER = re.compile(r"\d+")


class GroupRange(ReaderOptions):
    start: Int = Field(alias="from", description="first number of the range (inclusive)")
    end: Int = Field(alias="to", description="last number of the range (inclusive)")
    group: Str | Int = Field(description="the group these numbers belong to")

    @model_validator(mode="after")
    def _ordered(self) -> "GroupRange":
        if self.end < self.start:
            raise ValueError(f"range from {self.start} to {self.end} is empty (from must be <= to)")
        return self


class GroupSource(ReaderOptions):
    """Exactly one of template / column / regex / file / ranges (a plain string is a template)."""

    template: Str | None = Field(None, description="template over the layout's fields or the row's columns")
    column: Str | None = Field(None, description="a column of the reader's table")
    regex: Str | None = Field(None, description="regular expression searched in 'input'")
    file: InsidePath | None = Field(None, description="mapping table (CSV/TSV/XLSX/JSON) from key to group, relative to the dataset folder")
    key: Str | None = Field(None, description="file: column holding the case key")
    value: Str | None = Field(None, description="file: column holding the group")
    ranges: list[GroupRange] | InsidePath | None = Field(None, description="numeric ranges [{from, to, group}] or a CSV of them")
    # not ``on``: YAML 1.1 reads an ``on:`` key as the boolean true
    input: Str = Field("{stem}", description="template giving what regex/file/ranges read from each case")
    unmatched: Literal["error", "own"] = Field("error", description="a case no source names: error | own (its own group)")
    name: Str | None = Field(None, description="what a group is (sequence, lesion, eye, ...), for split.group_by; default: read from the source ({sequence} -> sequence, column lesion_id -> lesion)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"template": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_source(self) -> "GroupSource":
        given = [k for k in ("template", "column", "regex", "file", "ranges") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of template, column, regex, file, ranges (got {', '.join(given) or 'none'})")
        if self.file is not None and not (self.key and self.value):
            raise ValueError("a group file needs 'key' (the case's column) and 'value' (the group's column)")
        if isinstance(self.ranges, list):
            spans = sorted((r.start, r.end) for r in self.ranges)
            for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
                if b0 <= a1:
                    raise ValueError(f"ranges {a0}-{a1} and {b0}-{b1} overlap")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regular expression ({e})") from None
        return v


def declared_names(source: GroupSource | None) -> set[str]:
    """The names ``split.group_by`` may give these groups: ``name`` when set, else what the source
    says: a template's field (``{sequence}`` -> sequence), a column or a file's value column
    (``lesion_id`` -> lesion_id and lesion), a regex's named group (other than ``group``)."""
    if source is None:
        return set()
    if source.name:
        return {source.name.lower()}
    words: list[str] = []
    if source.template is not None:
        words += re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", source.template)
    for col in (source.column, source.value if source.file is not None else None):
        if col:
            words.append(col)
    if source.regex is not None:
        words += [g for g in re.compile(source.regex).groupindex if g != "group"]
    out = set()
    for w in words:
        w = re.sub(r"[^a-z0-9]+", "_", w.lower()).strip("_")
        if w:
            out.add(w)
            out.add(re.sub(r"_(id|ids|no|number|nr)$", "", w) or w)
    return out


def reader_group_names(reader: object) -> set[str]:
    """What a reader's groups are, as ``split.group_by`` may name them: its ``data.options.group``
    source, plus a plugin reader's own ``group_names``."""
    names = set(getattr(reader, "group_names", ()) or ())
    raw = getattr(reader, "options", {}).get("group") if isinstance(getattr(reader, "options", None), dict) else None
    if raw is not None:
        try:
            names |= declared_names(GroupSource.model_validate(raw))
        except ValueError:
            pass  # an invalid source is reported where the task loads
    return names


class GroupResolver:
    """Turns a ``GroupSource`` into a group per case; collects the cases it cannot place."""

    def __init__(self, source: GroupSource | None, root: Path, columns: list[str] | None = None):
        self.source = source
        self.root = root
        self.unmatched: list[str] = []
        self._table: dict[str, str] | None = None
        self._ranges: list[tuple[int, int, str]] | None = None
        self._regex = re.compile(source.regex) if source and source.regex else None
        if source and source.column is not None and columns is not None and source.column not in columns:
            raise column_error(source.column, columns, root, "data.options.group.column")

    def __call__(self, fields: dict[str, str], default: str) -> str:
        s = self.source
        if s is None:
            return default
        got = self._group(s, fields)
        if got is None or got == "":
            if s.unmatched == "own":
                return default
            self.unmatched.append(default)
            return default
        return got

    def _group(self, s: GroupSource, fields: dict[str, str]) -> str | None:
        if s.template is not None:
            return fill(s.template, fields, "group")
        if s.column is not None:
            if s.column not in fields:
                raise UserError(f"data option 'group.column' names '{s.column}', which this reader has no column for", fix="use group: {column: ...} with table readers only; other readers take a template, regex, file or ranges")
            return fields[s.column]
        key = self._on(s, fields)
        if self._regex is not None:
            m = self._regex.search(key)
            if m is None:
                return None
            if "group" in self._regex.groupindex:
                return m.group("group")
            return m.group(1) if self._regex.groups else m.group(0)
        if s.file is not None:
            return self._mapping(s).get(key)
        number = _NUMBER.findall(key)
        if not number:
            return None
        n = int(number[-1])
        for lo, hi, group in self._range_list(s):
            if lo <= n <= hi:
                return group
        return None

    def _on(self, s: GroupSource, fields: dict[str, str]) -> str:
        return fill(s.input, fields, "group.input")

    def _mapping(self, s: GroupSource) -> dict[str, str]:
        if self._table is None:
            path = self.root / str(s.file)
            if path.suffix.lower() == ".json":
                self._table = _json_mapping(path)
            else:
                table = read_table(path)
                for col, opt in ((s.key, "key"), (s.value, "value")):
                    table.require(str(col), f"data.options.group.{opt}")
                self._table = {}
                for i, row in enumerate(table.rows):
                    k, v = row[str(s.key)].strip(), row[str(s.value)].strip()
                    if k in self._table and self._table[k] != v:
                        raise DataError(f"{table.row_name(i)}: '{k}' is mapped to '{self._table[k]}' and to '{v}'", path=path, fix="map each key to one group")
                    self._table[k] = v
        return self._table

    def _range_list(self, s: GroupSource) -> list[tuple[int, int, str]]:
        if self._ranges is None:
            if isinstance(s.ranges, str):
                self._ranges = _range_file(self.root / s.ranges)
            else:
                self._ranges = [(r.start, r.end, str(r.group)) for r in s.ranges or []]
        return self._ranges

    def issues(self, where: Path | str) -> list[Issue]:
        """One fatal line for every case the source could not place (``unmatched: error``)."""
        if not self.unmatched or self.source is None:
            return []
        s = self.source
        what = "column" if s.column else "regex" if s.regex else f"file {s.file}" if s.file else "ranges" if s.ranges is not None else "template"
        first = ", ".join(self.unmatched[:3]) + (f" and {len(self.unmatched) - 3} more" if len(self.unmatched) > 3 else "")
        return [Issue(str(where), f"{len(self.unmatched)} case(s) have no group from data.options.group ({what}): {first}", "extend the group source to cover them, or set group.unmatched: own to give each its own group")]


def _json_mapping(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError("group mapping file not found", path=path, fix="check data.options.group.file in the task")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"not a readable JSON file ({getattr(e, 'msg', e)})", path=path, fix="re-export the mapping as a JSON object {key: group}") from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object {key: group}", path=path, fix="re-export the mapping as a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def _range_file(path: Path) -> list[tuple[int, int, str]]:
    table = read_table(path)
    cols = {c.lower(): c for c in table.columns}
    start, end = cols.get("from") or cols.get("start") or cols.get("first"), cols.get("to") or cols.get("end") or cols.get("last")
    group = cols.get("group") or cols.get("sequence") or cols.get("patient")
    if not (start and end and group):
        raise DataError(f"a ranges table needs columns from, to, group (has: {', '.join(table.columns)})", path=path, fix="name the columns from, to and group")
    out = []
    for i, row in enumerate(table.rows):
        try:
            lo, hi = int(float(row[start])), int(float(row[end]))
        except ValueError:
            raise DataError(f"{table.row_name(i)}: from/to '{row[start]}'/'{row[end]}' are not numbers", path=path, fix="correct the row") from None
        if hi < lo:
            raise DataError(f"{table.row_name(i)}: range {lo}-{hi} is empty", path=path, fix="from must be <= to")
        out.append((lo, hi, row[group].strip()))
    spans = sorted(out)
    for (a0, a1, _), (b0, b1, _) in zip(spans, spans[1:]):
        if b0 <= a1:
            raise DataError(f"ranges {a0}-{a1} and {b0}-{b1} overlap", path=path, fix="make the ranges disjoint")
    return out
