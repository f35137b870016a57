"""Remembered task checks: a task file that passed (or failed) the full checks — protocol settings,
reader options, metric names, which import the protocols and with them torch — is not checked again
while its bytes, its place and lvmbench's code are the same, so ``lvmbench tasks``, ``suites`` and
``task check`` answer without loading torch.

The key is a hash of the file's bytes and path, of every source file of the installed lvmbench
package (any code change checks every task again) and of the installed plugin packages (a plugin
can add a protocol or a reader). Entries live under ``<cache>/task-checks/``; a cache folder that
cannot be written only means the checks run every time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.paths import cache_root
from lvmbench.registry import plugin_packages
from lvmbench.spec import TaskSpec
from lvmbench.task_files import Discovered, discover, parse_task_file

PACKAGE = Path(__file__).resolve().parent
FORMAT = 1


@functools.cache
def code_stamp() -> str:
    """sha256 of lvmbench's own source files (names and bytes) and the installed plugin packages."""
    h = hashlib.sha256(f"task-checks {FORMAT}".encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    h.update(json.dumps(plugin_packages(), sort_keys=True).encode())
    return h.hexdigest()


def _entry(path: Path, blob: bytes) -> Path:
    key = hashlib.sha256(code_stamp().encode() + str(path.resolve()).encode() + b"\0" + blob).hexdigest()
    return cache_root() / "task-checks" / key[:2] / f"{key}.json"


def recall(path: Path, blob: bytes) -> UserError | bool | None:
    """True: the file passed before; a UserError: it failed before with that line; None: unknown."""
    try:
        doc = json.loads(_entry(path, blob).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if doc.get("ok") is True:
        return True
    if isinstance(doc.get("error"), str):
        return UserError(doc["error"])
    return None


def remember(path: Path, blob: bytes, error: UserError | None) -> None:
    """Best effort: a read-only or full cache folder is no reason to fail a command."""
    entry = _entry(path, blob)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"ok": True} if error is None else {"error": str(error)}), encoding="utf-8")
        os.replace(tmp, entry)
    except OSError:
        pass


def checked(spec: TaskSpec, path: Path, check: Callable[[TaskSpec], None]) -> TaskSpec:
    """``spec`` (parsed from ``path``) once ``check`` passed on it, now or before for these bytes,
    this place and this code; its error (remembered too) otherwise."""
    try:
        blob = path.read_bytes()
    except OSError:
        blob = None
    known = recall(path, blob) if blob is not None else None
    if known is True:
        return spec
    if isinstance(known, UserError):
        raise known
    try:
        check(spec)
    except UserError as e:
        if blob is not None:
            remember(path, blob, e)
        raise
    if blob is not None:
        remember(path, blob, None)
    return spec


def checked_tasks(check: Callable[[TaskSpec], None]) -> Discovered:
    """Every task file, parsed and checked (``check`` runs only for files not remembered)."""
    return discover(lambda path: checked(parse_task_file(path), path, check))
