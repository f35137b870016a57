"""Failure records: ``<result>.json.failed`` says why a unit's last run failed, in one line.

A failed unit writes no result, so without a record the grid could only call it "missing"; with
many workers on many nodes, the one line that says why is in some job's log. The runner writes the
record (atomically) when a unit fails and removes it when the unit later succeeds; ``lvmbench
status`` reads it. Only files carrying the marker below are ever replaced or removed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.results import owner_info, result_path, write_atomic
from lvmbench.spec import RunUnit

MARKER = "lvmbench-unit-failure"
MAX_MESSAGE = 400  # one line, not a traceback


def failure_path(result: Path) -> Path:
    return result.with_name(result.name + ".failed")


def note_failure(results: Path, unit: RunUnit, message: str) -> None:
    """Record why ``unit`` failed. Never raises: a results tree that cannot take the record has
    already said so through the unit's own error."""
    path = failure_path(result_path(results, unit))
    if path.exists() and read_failure(path) is None:
        return  # not ours: leave it alone
    line = " ".join(str(message).split())[:MAX_MESSAGE]
    doc = {"kind": MARKER, "unit": unit.key(), "error": line, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **owner_info()}
    try:
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
    except (OSError, UserError):  # a read-only or full results tree: best effort only
        pass


def read_failure(path: Path) -> dict | None:
    """The failure record at ``path``, or None when there is none or the file is not one of ours."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 16:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == MARKER else None


def clear_failure(result: Path) -> None:
    """The unit succeeded: its failure record (if lvmbench wrote one) is obsolete."""
    path = failure_path(result)
    if read_failure(path) is not None:
        try:
            path.unlink()
        except OSError:
            pass
