"""Result files: one JSON per unit, written atomically, claimed with a lock while running.

Layout: ``<results>/<suite>/<encoder>/<weights_sha12>/<task>/<protocol>[-<head>]-s<seed>[-f<frac>].json``.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from lvmbench.errors import UserError
from lvmbench.spec import ResultRecord, RunUnit


class ResultsDirError(UserError):
    pass


def result_path(results: Path, unit: RunUnit) -> Path:
    return results / unit.relpath()


def write_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise ResultsDirError(f"cannot write results ({e.strerror})", path=path.parent, fix="pass a writable --results DIR") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ResultsDirError(f"cannot write result ({e.strerror})", path=path, fix="free disk space or pass another --results DIR") from None


def write_result(results: Path, record: ResultRecord) -> Path:
    path = result_path(results, record.unit)
    write_atomic(path, record.model_dump_json(indent=1) + "\n")
    return path


def read_result(path: Path) -> ResultRecord:
    try:
        return ResultRecord.model_validate_json(path.read_text())
    except (OSError, ValueError, ValidationError) as e:
        msg = str(e).splitlines()[0][:120]
        raise UserError(f"corrupt result file ({msg})", path=path, fix="delete it and rerun `lvmbench eval` to recompute that unit") from None


def is_done(results: Path, unit: RunUnit) -> bool:
    """A unit is done when its result file exists and parses; a corrupt file counts as not done."""
    path = result_path(results, unit)
    if not path.is_file():
        return False
    try:
        read_result(path)
        return True
    except UserError:
        return False


def iter_results(results: Path, *, strict: bool = False) -> Iterator[tuple[Path, ResultRecord | UserError]]:
    if not results.is_dir():
        return
    for path in sorted(results.rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            yield path, read_result(path)
        except UserError as e:
            if strict:
                raise
            yield path, e


class Claim:
    """An exclusive claim on a unit (``<result>.lock``, created with O_EXCL).

    A lock left by a killed process (its pid no longer alive on this host) is taken over, so a
    SIGKILLed run never blocks its rerun; a live owner makes ``acquire`` return False.
    """

    def __init__(self, path: Path):
        self.lock = path.with_suffix(path.suffix + ".lock")
        self.held = False

    def acquire(self) -> bool:
        try:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResultsDirError(f"cannot create results folder ({e.strerror})", path=self.lock.parent, fix="pass a writable --results DIR") from None
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale():
                    self.lock.unlink(missing_ok=True)
                    continue
                return False
            except OSError as e:
                raise ResultsDirError(f"cannot write in results folder ({e.strerror})", path=self.lock.parent, fix="pass a writable --results DIR") from None
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            self.held = True
            return True
        return False

    def _stale(self) -> bool:
        try:
            info = json.loads(self.lock.read_text() or "{}")
        except (OSError, ValueError):
            return True
        if info.get("host") != socket.gethostname():
            return False  # another machine's claim: leave it alone
        pid = int(info.get("pid", -1))
        if pid <= 0:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        if self.held:
            self.lock.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
