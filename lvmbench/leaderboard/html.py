"""``lvmbench leaderboard --html OUT/``: one self-contained page (OUT/index.html), no server.

The page holds the leaderboard as JSON (the same :class:`~lvmbench.leaderboard.board.SuiteBoard`
numbers as the markdown) and renders it with inline JavaScript: sortable columns, filters by
suite, family and protocol, a metric switch (each column's primary metric, or any metric a result or
reported number carries, reported numbers beside results of their own metric), the CI and every
seed on hover, each cell linking to its result JSON by
a path relative to the page (so it works from ``file://`` and on GitHub Pages when the results
folder is published next to it). The footer names the results folder it was built from.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lvmbench.errors import UserError
from lvmbench.leaderboard.board import FAMILY_TITLES, MAIN, PRIMARY, Cell, Group, SuiteBoard, View, metric_value
from lvmbench.leaderboard.markdown import LEGEND, SUITE_TITLES, _metrics_line
from lvmbench.leaderboard.page_assets import CSS, JS
from lvmbench.leaderboard.ranking import summary
from lvmbench.outputs import check_target, write_atomic
from lvmbench.spec import ResultRecord


def _num(v: float | None, digits: int = 2) -> float | None:
    return round(float(v), digits) if v is not None and math.isfinite(v) else None


def _cell(c: Cell, href: Callable[[ResultRecord], str]) -> dict[str, Any]:
    mean, std, n = c.stats
    ci = c.ci if c.ci is not None and math.isfinite(c.ci.lo) else None
    return {
        "v": _num(100 * mean),
        "std": _num(100 * std) if n > 1 else None,
        "n": n,
        "lo": _num(100 * ci.lo) if ci else None,
        "hi": _num(100 * ci.hi) if ci else None,
        "method": ci.method if ci else None,
        "approx": bool(ci and ci.method.endswith("(approx.)")),
        "bold": c.bold,
        "marks": c.marks,
        "metric": c.metric,
        "seeds": [{"seed": r.unit.seed, "v": _num(100 * v) if (v := metric_value(r, c.metric)) is not None else None, "href": href(r)} for r in c.records],
    }


def _table_data(board: SuiteBoard, view: View, g: Group, href: Callable[[ResultRecord], str], caption: str) -> dict[str, Any]:
    rows = []
    for row, tag in g.rows:
        cells: list[dict[str, Any] | None] = []
        for t in g.tasks:
            col = g.col(t, tag)
            c, rep = view.cell(row, col), view.reported_value(row, col)
            if c is not None and row in view.moved.get(col, {}):
                cells.append({"v": None, "moved": view.moved[col][row]})
            elif c is not None:
                cells.append(_cell(c, href))
            elif rep is not None:
                cells.append({"v": _num(rep.value), "std": _num(rep.std), "reported": rep.source})
            else:
                cells.append(None)
        kind = "reported" if row.endswith(" (reported)") and row not in board.units else ("older" if "‹" in row else "measured")
        protocols = sorted({g.col(t, tag)[1] for t in g.tasks})
        rows.append({"row": row, "protocol": tag, "protocols": protocols, "kind": kind, "cells": cells})
    return {"caption": caption, "metrics": _metrics_line(view, g).replace("`", "").replace("\\", ""), "tasks": [{"id": t, "mark": board.header_marks.get(t, "")} for t in g.tasks], "rows": rows}


def _apart_data(view: View, groups: list[Group], href: Callable[[ResultRecord], str]) -> dict[str, Any] | None:
    """Results set apart from their column's reported rows (other conventions), with what differs."""
    tasks = {t for g in groups for t in g.tasks}
    moved = sorted((row, col, why) for col, rows in view.moved.items() if col[0] in tasks for row, why in rows.items())
    if not moved:
        return None
    cols = sorted({col for _, col, _ in moved})
    rows = []
    for r in sorted({row for row, _, _ in moved}):
        cells = [_cell(c, href) if (c := view.cell(r, col)) is not None and r in view.moved.get(col, {}) else None for col in cols]
        rows.append({"row": r, "protocol": "", "protocols": sorted({p for _, p in cols}), "kind": "measured", "cells": cells})
    return {
        "caption": "Not the paper's protocol: results measured under other conventions than the reported rows of their column state",
        "metrics": " ".join(f"{row} on {col[0]} / {col[1]}: {why}." for row, col, why in moved),
        "tasks": [{"id": f"{t} / {p}", "mark": ""} for t, p in cols],
        "rows": rows,
        "apart": True,
    }


def view_data(board: SuiteBoard, view: View, href: Callable[[ResultRecord], str]) -> list[dict[str, Any]]:
    families = []
    for family in view.families():
        groups = view.groups(family)
        tables = []
        for g in groups:
            caption = "" if len(groups) < 2 else (f"Tasks whose main protocol is {g.main}" if g.main != MAIN else "Tasks run with their main protocol only")
            tables.append(_table_data(board, view, g, href, caption))
        if (apart := _apart_data(view, groups, href)) is not None:
            tables.append(apart)
        families.append({"key": family, "title": FAMILY_TITLES[family], "tables": tables})
    return families


def suite_data(board: SuiteBoard, href: Callable[[ResultRecord], str]) -> dict[str, Any]:
    s = summary(board)
    fams = s.families
    rows = [
        {
            "row": d["row"],
            "kind": d["kind"],
            "rank": _num(d["rank"]),
            "tasks": f"{d['tasks']}/{d['of']}",
            "families": [{"text": d["families"][f], "v": _average(d["families"][f])} for f in fams],
        }
        for d in s.rows
    ]
    # every metric a result or reported number carries: the page's metric switch (primary first)
    views = [{"metric": PRIMARY, "label": "each column's primary metric", "families": view_data(board, board.view(), href)}]
    views += [{"metric": m, "label": m, "families": view_data(board, board.view(m), href)} for m in board.metrics_available()]
    notes = [*s.notes, *board.notes, *board.variant_notes]
    if board.unknown:
        notes.append(f"Tasks not registered in this checkout: {', '.join(board.unknown)}; no family average.")
    return {"name": board.suite, "title": SUITE_TITLES.get(board.suite, board.suite), "families_summary": fams, "caption": s.caption(), "summary": rows, "views": views, "notes": notes}


def _average(text: str) -> float | None:
    """The number of a family-average cell (``81.50§1`` -> 81.5); None for ``k/K`` and ``–``."""
    head = text.split("§", 1)[0]
    try:
        return _num(float(head))
    except ValueError:
        return None


def page(lb, out_dir: Path) -> str:
    rel = Path(os.path.relpath(lb.results.resolve(), out_dir.resolve())).as_posix()
    link = quote(rel) + "/"

    def href(r: ResultRecord) -> str:
        return link + quote(lb.file_of(r))

    data = {
        "legend": LEGEND.replace("**", "") + " Hover a cell for its CI and every seed; click it to open its result JSON; click a column header to sort.",
        "results_as_given": lb.results.as_posix(),
        "results_link": link,
        "suites": [suite_data(b, href) for b in lb.boards],
    }
    # "<" escaped inside the JSON, so no string in it can close the script element
    blob = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>lvmbench leaderboard</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n"
        "<h1>lvmbench leaderboard</h1>\n<div id=\"controls\"></div>\n<main id=\"app\"><noscript>This page renders its tables with JavaScript; "
        "the same numbers are in leaderboard.md.</noscript></main>\n<footer id=\"footer\"></footer>\n"
        f"<script id=\"lb-data\" type=\"application/json\">{blob}</script>\n"
        f"<script>{JS}</script>\n</body>\n</html>\n"
    )


def write_page(lb, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` (the folder is created; an existing file there is replaced only
    if lvmbench wrote it)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("--html names a file", path=out_dir, fix="pass a folder: the page is written to FOLDER/index.html")
    target = out_dir / "index.html"
    check_target(target, "--html DIR")
    if target.is_file() and "<title>lvmbench leaderboard</title>" not in target.read_text(encoding="utf-8", errors="replace")[:2000]:
        raise UserError("index.html there was not written by lvmbench; not replacing it", path=target, fix="pass another --html folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(target, page(lb, out_dir), option="--html DIR")
    return target
