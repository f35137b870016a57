"""Tables (CSV, TSV, XLSX through pandas) and file lookup for the manifest readers.

Every cell is read as text, exactly as written (no NaN, no ``1`` -> ``1.0``; Excel cells holding
numbers are the exception: whole numbers come back without a decimal part), so a label ``007`` or
an id ``1e5`` stays what the table says. A problem is one line naming the file and, for a row, its
line number as a spreadsheet shows it (the header is row 1).
"""

from __future__ import annotations

import fnmatch
import glob as globlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lvmbench.data.contained import walk
from lvmbench.errors import DataError, UserError
from lvmbench.registry import suggest

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": None, ".xlsx": "excel", ".xlsm": "excel", ".xls": "excel"}


@dataclass
class Table:
    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    first_row: int = 2  # the spreadsheet row of the first data row (1 for a table without header)

    def row_name(self, i: int) -> str:
        return f"row {i + self.first_row}"

    def require(self, column: str, option: str) -> None:
        if column not in self.columns:
            raise column_error(column, self.columns, self.path, option)


def column_error(column: str, columns: list[str], path: Path, option: str) -> DataError:
    hint = suggest(column, columns)
    have = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
    return DataError(
        f"{option}: the table has no column '{column}'" + (f"; did you mean '{hint}'?" if hint else "") + f" (columns: {have})",
        path=path,
        fix=f"set {option} to one of the table's columns",
    )


def read_table(path: Path, sheet: str | int | None = None, sep: str | None = None, header: bool = True) -> Table:
    """The table's header and rows, every cell as stripped text; without a header row the columns
    are named col1, col2, col3 ... (usable in templates: ``{col1}.png``)."""
    if not path.is_file():
        raise DataError("table not found", path=path, fix="check the file name in the task's data.options (relative to the dataset folder)")
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    # Read without a header and take the first row ourselves: pandas renames a repeated header
    # (label, label -> label, label.1) before anyone could see it, and the first column would be used.
    try:
        if kind == "excel":
            try:
                frame = pd.read_excel(path, sheet_name=0 if sheet is None else sheet, dtype=object, header=None)
            except ImportError as e:
                raise UserError(f"reading Excel files needs openpyxl ({e})", path=path, fix="pip install openpyxl, or save the sheet as CSV") from None
            frame = frame.map(_excel_text)
        else:
            frame = pd.read_csv(path, sep=sep or kind or None, dtype=str, keep_default_na=False, encoding="utf-8-sig", engine="python" if not (sep or kind) else "c", skipinitialspace=True, header=None)
    except UserError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        msg = str(e).splitlines()[0][:140] if str(e) else e.__class__.__name__
        raise DataError(f"not a readable table ({msg})", path=path, fix="save it as UTF-8 CSV/TSV with one header row, or as XLSX") from None
    except Exception as e:  # openpyxl raises its own types for damaged workbooks
        raise DataError(f"not a readable table ({e.__class__.__name__}: {str(e)[:120]})", path=path, fix="re-save the workbook, or export the sheet as CSV") from None
    if header:
        if frame.empty:
            raise DataError("not a readable table (no header row)", path=path, fix="save it as UTF-8 CSV/TSV with one header row, or as XLSX")
        # an empty header cell gets pandas' name for it ("Unnamed: 3"), so messages can point at it
        columns = [(str(c).strip() if c is not None else "") or f"Unnamed: {i}" for i, c in enumerate(frame.iloc[0])]
        frame = frame.iloc[1:]
    else:
        columns = [f"col{i + 1}" for i in range(len(frame.columns))]
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise DataError(f"the header names column(s) {', '.join(repr(c) for c in dup)} more than once; only one of them could be read", path=path, fix="give every column its own name (or delete the copy)")
    frame.columns = columns
    rows = [{c: ("" if v is None else str(v)).strip() for c, v in zip(columns, rec)} for rec in frame.itertuples(index=False, name=None)]
    return Table(path, columns, rows, 2 if header else 1)


def _excel_text(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:  # NaN: an empty cell
            return ""
        if v.is_integer():
            return str(int(v))
    return str(v)


class FileIndex:
    """Every file under a folder, listed once: a table of 10 000 rows then costs set lookups, not
    10 000 directory scans. ``find`` takes a relative path, a glob pattern, or a name without its
    extension (tried with ``suffixes``). ``within``: the dataset folder, when ``root`` is a folder
    in it (a link from ``root`` back up to it is not followed)."""

    def __init__(self, root: Path, suffixes: tuple[str, ...], within: Path | None = None):
        self.root = root
        self.suffixes = suffixes
        self.files: set[str] = set()
        self.by_name: dict[str, list[str]] = defaultdict(list)
        if root.is_dir():
            # links the user placed are followed, each real folder once: a link loop cannot explode
            for base, filenames in walk(root, within):
                for f in filenames:
                    rel = f"{base}/{f}" if base else f
                    self.files.add(rel)
                    self.by_name[f].append(rel)

    def find(self, rel: str) -> str | None:
        rel = rel.replace("\\", "/")
        if rel.startswith("./"):
            rel = rel[2:]
        if rel in self.files:
            return rel
        if globlib.has_magic(rel):
            name = rel.rsplit("/", 1)[-1]
            pool = self.by_name.get(name, []) if not globlib.has_magic(name) else sorted(self.files)
            hits = sorted(p for p in pool if fnmatch.fnmatchcase(p, rel))
            return hits[0] if hits else None
        if not Path(rel).suffix or Path(rel).suffix.lower() not in self.suffixes:
            for s in self.suffixes:
                for cand in (rel + s, rel + s.upper()):
                    if cand in self.files:
                        return cand
        return None
