"""Default locations: data root, cache, results. Environment variables override the defaults."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lvmbench.errors import UserError


def cache_root() -> Path:
    return Path(os.environ.get("LVMBENCH_CACHE", Path.home() / ".cache" / "lvmbench"))


def data_root(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("LVMBENCH_DATA")
    return Path(env) if env else None


def usable_cache_dir(explicit: str | Path | None = None) -> Path:
    """The cache folder (``--cache-dir`` > LVMBENCH_CACHE > default), created and proven writable.

    Checked once, up front, so a bad setting is one line before any work instead of a traceback
    from deep inside a protocol. Running without a cache is not offered as a fallback: the smoke
    suite's data lives there, and on real data a silently disabled cache means decoding every
    image and re-extracting every feature on every run.
    """
    path = Path(explicit) if explicit else cache_root()
    problem = _unusable_folder(path)
    if problem:
        raise UserError(f"cannot use the cache folder ({problem})", path=path, fix=_cache_fix(explicit))
    return path


def _cache_fix(explicit: str | Path | None) -> str:
    if explicit:
        return "pass --cache-dir a folder you can write to"
    if os.environ.get("LVMBENCH_CACHE"):
        return "point LVMBENCH_CACHE at a folder you can write to (or unset it)"
    return "make it writable, or set LVMBENCH_CACHE (or pass --cache-dir) to a folder you can write to"


def _unusable_folder(path: Path) -> str | None:
    """Why ``path`` cannot serve as a writable folder, or None when it can (it is created if missing)."""
    if path.exists() and not path.is_dir():
        return "it is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        # os.access is wrong on read-only mounts, ACLs and for root: only a real write tells
        fd, probe = tempfile.mkstemp(dir=path, prefix=".lvmbench-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return e.strerror or e.__class__.__name__
    return None
