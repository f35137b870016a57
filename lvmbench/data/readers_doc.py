"""``lvmbench readers``: every reader with its options (type, default, meaning) and one example."""

from __future__ import annotations

import re

import yaml
from tabulate import tabulate

from lvmbench.data.cases import READERS
from lvmbench.data.reader_options import options_model
from lvmbench.kit.doc import model_rows

GROUP_SOURCES = """\
group sources (data.options.group of the generic readers; a plain string is a template):
  "{patient}"                                  template over the layout's fields / the row's columns
  {column: lesion_id}                          a column of the reader's table
  {regex: '^(?P<group>P\\d+)_', input: "{name}"}   a regular expression searched in `input` (default {stem})
  {file: groups.csv, key: image, value: patient, input: "{stem}"}   mapping table (CSV/TSV/XLSX/JSON)
  {ranges: [{from: 1, to: 25, group: seq01}, {from: 26, to: 50, group: seq02}], input: "{stem}"}
  {ranges: sequences.csv}                      columns from, to, group; the last number in `input` is looked up
  unmatched: error (default) | own             a case no source places: verify error | its own group
"""


def _type(text: str) -> str:
    text = re.sub(r"lvmbench\.[\w.]+\.(\w+)", r"\1", text)
    while True:
        new = re.sub(r"Union\[([^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\]", lambda m: m.group(1).replace(", ", " or "), text)
        if new == text:
            return text
        text = new


def reader_rows(cls: type) -> list[list[str]]:
    model = options_model(cls)
    defaults = getattr(cls, "defaults", {}) or {}
    rows = []
    for name, kind, default, doc in model_rows(model):
        if name in defaults:
            default = yaml.safe_dump(defaults[name], default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
            doc = (doc + " (preset)").strip()
        rows.append([name, _type(kind), default, doc])
    return rows


def readers_table(only: str | None = None) -> str:
    names = [only] if only else READERS.names()
    out: list[str] = []
    for name in names:
        cls = READERS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        base = next((b for b in cls.__mro__[1:] if getattr(b, "Options", None) is getattr(cls, "Options", None) and b.__name__ != cls.__name__ and getattr(cls, "defaults", None)), None)
        preset = f"; a preset of {_registered_name(base)}" if base is not None and getattr(cls, "defaults", None) else ""
        out += [f"## {name} ({cls.kind}{preset})", ""]
        if doc:
            out += [" ".join(line.strip() for line in doc[:3] if line.strip()), ""]
        if getattr(cls, "Options", None) is None:
            out += ["(a plugin reader without an options model: its options are not checked)", ""]
        else:
            out += [tabulate(reader_rows(cls), headers=["option", "type", "default", "meaning"], tablefmt="github"), ""]
        example = getattr(cls, "example", None)
        if getattr(cls, "defaults", None) or (example and example.get("reader") != name):
            example = {"reader": name, "dir": "<dataset folder>"}  # a preset: its defaults are the layout
        if example:
            out += ["example:", "", "```yaml", yaml.safe_dump({"data": example}, sort_keys=False, width=120, default_flow_style=None).rstrip(), "```", ""]
    if only is None:
        out.append(GROUP_SOURCES)
    return "\n".join(out).rstrip() + "\n"


def _registered_name(cls: type | None) -> str:
    return next((n for n, c in READERS.items() if c is cls), getattr(cls, "__name__", "?"))
