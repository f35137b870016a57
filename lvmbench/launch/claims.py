"""Who holds a unit's claim (``<result>.json.lock``), whether its owner still lives, and clearing
claims whose owner is gone.

A claim records host, pid and (inside Slurm) the job id (``lvmbench.results.owner_info``). Its
owner is alive when: on this host, its pid exists; on another host, Slurm still lists its job
(``squeue``); otherwise the ``flock`` that the owner holds while running decides (a lock nobody
holds belongs to a dead process). A live claim's age is the time since it was taken (the lock
file's mtime). Dead claims are harmless for ``flock`` (the next run takes them over) but block a
run where the filesystem has no ``flock``; ``--clear-stale`` removes them, and only files that are
lvmbench's own claims.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.results import STALE_EMPTY_LOCK_S, Claim


@dataclass
class ClaimState:
    lock: Path
    state: str  # running | stale | unverified | foreign
    why: str
    owner: dict = field(default_factory=dict)
    age_s: float = 0.0

    @property
    def result(self) -> Path:
        return self.lock.with_name(self.lock.name.removesuffix(".lock"))

    def describe(self) -> str:
        o = self.owner
        who = ", ".join(p for p in (f"host {o['host']}" if o.get("host") else "", f"pid {o['pid']}" if o.get("pid") else "", f"job {o['job']}" if o.get("job") else "") if p)
        return f"{who or 'owner unknown'}, claimed {age_text(self.age_s)} ago"


def age_text(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def read_owner(lock: Path) -> dict | None:
    """The claim's owner record; ``{}`` for an empty file (an owner between create and write);
    None when the file is not an lvmbench claim."""
    try:
        text = lock.read_text(encoding="utf-8")[:4096]
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and "pid" in doc and "host" in doc:
        return doc
    return None


def slurm_jobs_alive(job_ids: set[str]) -> dict[str, str] | None:
    """``{job id: state}`` of the listed jobs Slurm still has queued or running; None without squeue."""
    if not job_ids or shutil.which("squeue") is None:
        return None
    try:
        # -r: one line per array element (pending elements are otherwise folded into 123_[4-9])
        res = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(sorted(job_ids))], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0 and not res.stdout.strip():
        # squeue exits non-zero when every listed job has left the queue ("Invalid job id")
        return {} if "invalid job id" in res.stderr.lower() else None
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def flock_free(lock: Path) -> bool | None:
    """True when nobody holds the claim's flock, False when someone does, None when this
    filesystem has no flock. The probe holds a shared lock for microseconds only."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def inspect(lock: Path, slurm: dict[str, str] | None) -> ClaimState:
    """The claim at ``lock``; ``slurm``: ``slurm_jobs_alive`` of every job named by the claims."""
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        age = 0.0
    owner = read_owner(lock)
    if owner is None:
        return ClaimState(lock, "foreign", "not an lvmbench claim (left alone)", {}, age)
    if not owner:
        if age < STALE_EMPTY_LOCK_S:
            return ClaimState(lock, "running", "being taken", owner, age)
        free = flock_free(lock)
        return ClaimState(lock, "stale" if free in (True, None) else "running", "empty claim left by a process killed while taking it", owner, age)
    try:
        pid = int(owner.get("pid", -1))
    except (TypeError, ValueError):
        pid = -1
    if owner.get("host") == socket.gethostname():
        if pid > 0 and pid_alive(pid):
            return ClaimState(lock, "running", "", owner, age)
        return ClaimState(lock, "stale", f"pid {pid} on this host is gone", owner, age)
    job = owner.get("job")
    if job and slurm is not None:
        if job in slurm or job.split("_")[0] in slurm:
            return ClaimState(lock, "running", f"Slurm job {job} {slurm.get(job, slurm.get(job.split('_')[0], '')).lower()}", owner, age)
        return ClaimState(lock, "stale", f"Slurm job {job} has ended", owner, age)
    free = flock_free(lock)
    if free is True:
        return ClaimState(lock, "stale", "nobody holds its lock", owner, age)
    if free is False:
        return ClaimState(lock, "running", "", owner, age)
    return ClaimState(lock, "unverified", f"claimed on {owner.get('host')}; cannot check that host from here", owner, age)


# clear()'s answer for a claim that a run took over meanwhile: not removed, and rightly so
TAKEN = "a run holds it again"


def clear(claim: ClaimState) -> str | None:
    """Remove a dead claim (lvmbench's own only). None when removed; otherwise why not: ``TAKEN``
    when it is live again, else what stopped the removal (a read-only results tree ...)."""
    if claim.state != "stale":
        return "it is not a dead claim"
    if not os.access(claim.lock.parent, os.W_OK):  # EROFS or a folder without write permission
        return "its folder is not writable"
    c = Claim(claim.result)
    try:
        if c.acquire():  # proves nobody holds it now; release() unlinks it
            try:
                c.release()
            except OSError as e:
                _drop(c)
                return f"cannot remove it ({e.strerror or e.__class__.__name__})"
            return None
    except UserError as e:  # a results tree we cannot write
        return str(e).split("; fix:")[0].removeprefix(f"{e.path}:").strip() if e.path else str(e).split("; fix:")[0]
    # no flock here and the owner was on another host: Claim will not take it over; the
    # Slurm answer above is the proof, so remove it if it is still the same claim
    if read_owner(claim.lock) == claim.owner and flock_free(claim.lock) is None:
        try:
            claim.lock.unlink()
            return None
        except OSError as e:
            return f"cannot remove it ({e.strerror or e.__class__.__name__})"
    return TAKEN


def _drop(c: Claim) -> None:
    """Close the descriptor of a claim whose lock file could not be unlinked (no leaked flock)."""
    fd = getattr(c, "_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        c._fd = None
    c.held = False
