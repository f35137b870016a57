"""Result files: one JSON per unit, written atomically, claimed with a lock while running.

Layout: ``<results>/<suite>/<encoder>/<weights_sha12>/<task>/<protocol>[-<head>]-s<seed>[-f<frac>].json``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from lvmbench import outputs
from lvmbench.errors import UserError
from lvmbench.spec import ResultRecord, RunUnit


class ResultsDirError(UserError):
    pass


# An O_EXCL lock file still empty after this long was left by a process killed while creating it.
STALE_EMPTY_LOCK_S = 60.0


def result_path(results: Path, unit: RunUnit) -> Path:
    return results / unit.relpath()


def write_atomic(path: Path, text: str | bytes, option: str = "--results DIR") -> None:
    """:func:`lvmbench.outputs.write_atomic` raising :class:`ResultsDirError`: checked (no link,
    FIFO, device or folder replaced), written to a temp file and renamed, mode from the umask.
    ``option`` names the command-line option that chose ``path`` (for the fix of an error)."""
    outputs.write_atomic(path, text, option, ResultsDirError)


def write_result(results: Path, record: ResultRecord) -> Path:
    path = result_path(results, record.unit)
    write_atomic(path, record.model_dump_json(indent=1) + "\n")
    return path


# A result file larger than this is not one lvmbench wrote (per-case records of the largest task
# are a few MB): refuse it rather than read a runaway file into memory.
MAX_RESULT_BYTES = 256 << 20


def read_result(path: Path) -> ResultRecord:
    """Parse and check one result: a regular file, valid JSON of the schema, metrics finite and in
    range. Anything else is a one-line ``UserError`` (hand edits included: ``NaN``, ``1e308``)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO named *.json would block a reader forever
            raise ValueError("not a regular file")
        if st.st_size > MAX_RESULT_BYTES:
            raise ValueError(f"{st.st_size} bytes, larger than any result lvmbench writes")
        record = ResultRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError, ValidationError) as e:
        msg = str(e).splitlines()[0][:120]
        raise UserError(f"corrupt result file ({msg})", path=path, fix="delete it and rerun `lvmbench eval` to recompute that unit") from None
    problem = check_metrics(record)
    if problem:
        raise UserError(f"implausible result ({problem})", path=path, fix="the file was edited or damaged: delete it and rerun `lvmbench eval`")
    return record


def metric_bounds(name: str) -> tuple[float, float]:
    """The range a metric can take: scores and rates in [0, 1], kappa in [-1, 1], distances and
    counts non-negative."""
    base = name.split("/")[-1]
    if base.startswith(("hd95", "queries", "triplets", "odd_one_out_triples", "odd_one_out_dropped", "triplets_dropped")):
        return 0.0, math.inf
    if base.startswith(("qwk", "kappa")):
        return -1.0, 1.0
    if base.endswith(("_gap",)):
        return -1.0, 1.0
    if base.startswith(("dice", "iou", "nsd", "accuracy", "balanced_accuracy", "macro_f1", "auc", "ap", "ar", "recall@", "map@r", "r_precision", "triplet_agreement", "odd_one_out")):
        return 0.0, 1.0
    return -math.inf, math.inf


def check_metrics(record: ResultRecord) -> str | None:
    """Why the record's numbers cannot be what lvmbench wrote, or None."""
    values = {"primary": record.primary, **{k: v for k, v in record.metrics.items() if v is not None}}
    for name, value in values.items():
        if not math.isfinite(value):
            return f"{name} is {value}"
        lo, hi = metric_bounds(record.primary_metric if name == "primary" else name)
        if not lo <= value <= hi:
            return f"{name} = {value:g} is outside [{lo:g}, {hi:g}]"
    if record.primary_metric in record.metrics and record.metrics[record.primary_metric] != record.primary:
        return f"primary {record.primary:g} differs from metrics.{record.primary_metric} {record.metrics[record.primary_metric]}"
    return None


def is_done(results: Path, unit: RunUnit) -> bool:
    """A result file exists and reads (whether it is still current is ``lvmbench.runner.triager``'s call)."""
    path = result_path(results, unit)
    if not path.is_file():
        return False
    try:
        read_result(path)
        return True
    except UserError:
        return False


def iter_results(results: Path, *, strict: bool = False) -> Iterator[tuple[Path, ResultRecord | UserError]]:
    """Every result file under ``results`` (sorted), parsed; unreadable ones as a ``UserError``.

    Hidden files (temp files of a write in progress) and top-level folders starting with ``_``
    (``_audit/`` and other reports kept in the tree) are not results. A file that is not at its unit's own path
    (a copy such as ``knn-s0 (1).json``) is reported, not read: it would count a seed twice.
    """
    if not results.is_dir():
        return
    for path in sorted(results.rglob("*.json")):
        rel = path.relative_to(results).parts
        if rel[0].startswith("_") or any(part.startswith(".") for part in rel):
            continue
        if path.is_dir():
            continue  # a folder named *.json is nobody's result
        try:
            rec = read_result(path)
        except UserError as e:
            if strict:
                raise
            yield path, e
            continue
        expected = rec.unit.relpath().as_posix()
        if not path.as_posix().endswith("/" + expected) and path.relative_to(results).as_posix() != expected:
            err = UserError(
                f"result file is not at its unit's path (its unit belongs at .../{expected}); a copy would count twice",
                path=path,
                fix="delete the copy, or move the file to that path",
            )
            if strict:
                raise err
            yield path, err
            continue
        yield path, rec


def owner_info() -> dict:
    """What a claim records of its owner: host, pid and, inside a Slurm job, the job id (so that
    ``lvmbench status`` can ask Slurm about a claim made on another node)."""
    info: dict = {"pid": os.getpid(), "host": socket.gethostname()}
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    if job:
        info["job"] = job
    return info


class Claim:
    """An exclusive claim on a unit: ``<result>.lock`` held with ``flock``.

    The kernel drops the lock when its process dies (SIGKILL included), so a killed run never
    blocks its rerun and no pid bookkeeping can race. After locking, the lock file must still be
    the one at the path (a releasing owner unlinks it), otherwise the claim is retried. Where the
    filesystem has no ``flock`` (some network mounts), an ``O_EXCL`` lock file with the owner's
    host and pid is used instead; a lock of a dead process on this host is taken over.
    """

    def __init__(self, path: Path):
        self.lock = path.with_suffix(path.suffix + ".lock")
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResultsDirError(f"cannot create results folder ({e.strerror})", path=self.lock.parent, fix="pass a writable --results DIR") from None
        for _ in range(5):
            created = False
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(self.lock, os.O_RDWR)
                except FileNotFoundError:
                    continue  # its owner released it just now
                except OSError as e:  # a folder (or something else odd) where the lock file belongs
                    raise ResultsDirError(f"cannot use the unit's lock file ({e.strerror})", path=self.lock, fix="remove it; it must be a plain file that lvmbench creates") from None
            except OSError as e:
                raise ResultsDirError(f"cannot write in results folder ({e.strerror})", path=self.lock.parent, fix="pass a writable --results DIR") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise ResultsDirError(f"cannot lock in results folder ({e.strerror})", path=self.lock, fix="pass a writable --results DIR") from None
                if created:  # no flock here; creating the file exclusively is the claim
                    os.write(fd, json.dumps(owner_info()).encode())
                    os.close(fd)
                    self.held = True
                    return True
                os.close(fd)
                return self._acquire_excl()
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous owner unlinked it between our open and our lock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(owner_info()).encode())
            self._fd = fd
            self.held = True
            return True
        return False

    def _acquire_excl(self) -> bool:
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
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(owner_info(), f)
            self.held = True
            return True
        return False

    def _stale(self) -> bool:
        try:
            info = json.loads(self.lock.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            # empty or partial: an owner may be between creating and writing it; only old ones are stale
            try:
                return time.time() - self.lock.stat().st_mtime > STALE_EMPTY_LOCK_S
            except OSError:
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
        if not self.held:
            return
        # unlink while still holding the lock, so a waiter can tell the file went away (inode check)
        self.lock.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.held = False

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
