"""``lvmbench leaderboard --html OUT/``: one self-contained page (OUT/index.html), no server.

The page holds the leaderboard as JSON (the same :class:`~lvmbench.leaderboard.board.SuiteBoard`
numbers as the markdown) and renders it with inline JavaScript: sortable columns, filters by
suite, family and protocol, the CI and every seed on hover, each cell linking to its result JSON by
a path relative to the page (so it works from ``file://`` and on GitHub Pages when the results
folder is published next to it). The footer names the results folder it was built from.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from lvmbench.errors import UserError
from lvmbench.leaderboard.board import FAMILY_TITLES, MAIN, Cell, SuiteBoard
from lvmbench.leaderboard.markdown import LEGEND, SUITE_TITLES, _metrics_line
from lvmbench.leaderboard.page_assets import CSS, JS
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
        "seeds": [{"seed": r.unit.seed, "v": _num(100 * r.primary), "href": href(r)} for r in c.records],
    }


def suite_data(board: SuiteBoard, href: Callable[[ResultRecord], str]) -> dict[str, Any]:
    fams = board.summary_families()
    summary = [
        {
            "row": d["row"],
            "kind": d["kind"],
            "rank": _num(d["rank"]),
            "tasks": f"{d['tasks']}/{d['of']}",
            "families": [{"text": d["families"][f], "v": _num(float(d["families"][f])) if "/" not in d["families"][f] and d["families"][f] != "–" else None} for f in fams],
        }
        for d in board.summary()
    ]
    families = []
    for family in board.families():
        tables = []
        groups = board.groups(family)
        for g in groups:
            rows = []
            for row, tag in g.rows:
                cells = []
                for t in g.tasks:
                    col = g.col(t, tag)
                    c = board.cell(row, col)
                    rep = board.reported_value(row, col)
                    if c is not None:
                        cells.append(_cell(c, href))
                    elif rep is not None:
                        cells.append({"v": _num(rep.value), "std": _num(rep.std), "reported": rep.source})
                    else:
                        cells.append(None)
                kind = "reported" if row.endswith(" (reported)") and row not in board.units else ("older" if "‹" in row else "measured")
                protocols = sorted({g.col(t, tag)[1] for t in g.tasks})
                rows.append({"row": row, "protocol": tag, "protocols": protocols, "kind": kind, "cells": cells})
            caption = "" if len(groups) < 2 else (f"Tasks whose main protocol is {g.main}" if g.main != MAIN else "Tasks run with their main protocol only")
            tables.append({"caption": caption, "metrics": _metrics_line(board, g).replace("`", ""), "tasks": [{"id": t, "mark": board.header_marks.get(t, "")} for t in g.tasks], "rows": rows})
        families.append({"key": family, "title": FAMILY_TITLES[family], "tables": tables})
    notes = [*board.notes, *board.variant_notes]
    if board.unknown:
        notes.append(f"Tasks not registered in this checkout: {', '.join(board.unknown)}; no family average.")
    return {"name": board.suite, "title": SUITE_TITLES.get(board.suite, board.suite), "families_summary": fams, "summary": summary, "families": families, "notes": notes}


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
