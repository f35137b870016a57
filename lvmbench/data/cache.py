"""Decoded, resized arrays on disk so no epoch and no second run decodes a file twice.

Keys hash the source files' stamps (path, size, mtime and a content stamp), the reader and its
options, the target size and ``PREPROCESS_VERSION``; entries are written to a temporary file and
renamed, so concurrent runs never see half-written arrays (at worst both compute the same entry).

The content stamp (``content_stamp``: a hash of the size and the first and last 64 KiB) catches a
file changed in place with its size and mtime restored (``cp -p``, ``rsync -t``, archive tools),
which size + mtime alone take for the old file. Within a process it is remembered per (path, size,
mtime, inode, ctime): ctime moves on every write and every ``utime``, and no tool can set it back.
ctime is not part of the persistent key: it changes on every copy, restore and ``chmod``, so every
copy of a dataset would miss a shared cache, and some file systems do not keep it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lvmbench.errors import UserError

PREPROCESS_VERSION = 2  # 2: EXIF orientation applied; masks read as labels (0/1, class indices, palettes), alpha ignored

STAMP_BLOCK = 64 * 1024
_STAMPS: dict[tuple, str] = {}
_STAMPS_MAX = 2_000_000  # entries (~300 MB at worst); the memo is cleared beyond it
_RACY_NS = 2 * 10**9  # a file touched this recently may still change within one ctime tick


def content_stamp(path: str | Path, st: os.stat_result | None = None) -> str:
    """blake2b (16 hex) of the size and the first and last ``STAMP_BLOCK`` bytes (the whole file
    when it is smaller than two blocks), remembered per (path, size, mtime, inode, ctime).

    Files touched within the last 2 s are never remembered (git's "racy clean" rule): ctime has
    the granularity of a kernel tick, so a second write inside that tick would leave the memo key
    unchanged.
    """
    st = st or os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)
    hit = _STAMPS.get(memo)
    if hit is not None:
        return hit
    h = hashlib.blake2b(str(st.st_size).encode(), digest_size=8)
    with open(path, "rb") as f:
        if st.st_size <= 2 * STAMP_BLOCK:
            h.update(f.read())
        else:
            h.update(f.read(STAMP_BLOCK))
            f.seek(-STAMP_BLOCK, os.SEEK_END)
            h.update(f.read(STAMP_BLOCK))
    digest = h.hexdigest()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS:
        if len(_STAMPS) >= _STAMPS_MAX:
            _STAMPS.clear()
        _STAMPS[memo] = digest
    return digest


def file_stamp(path: Path) -> list:
    """[resolved path, size, mtime_ns, content stamp]: what the decoded and verified caches key on."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns, content_stamp(path, st)]


def cache_key(*parts: object) -> str:
    blob = json.dumps([PREPROCESS_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class ArrayCache:
    """A content-keyed store of numpy arrays (one ``.npy`` per key, sharded by prefix)."""

    def __init__(self, root: Path | None, enabled: bool = True):
        self.root = root
        self.enabled = enabled and root is not None
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npy"

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if not self.enabled:
            self.misses += 1
            return compute()
        path = self._path(key)
        if path.is_file():
            try:
                arr = np.load(path, allow_pickle=False)
                self.hits += 1
                return arr
            except (OSError, ValueError):
                pass  # a damaged entry is recomputed and replaced
        arr = compute()
        self.misses += 1
        self.put(path, arr)
        return arr

    @staticmethod
    def put(path: Path, arr: np.ndarray) -> None:
        _cache_write(path, lambda f: np.save(f, arr, allow_pickle=False))

    @staticmethod
    def put_bytes(path: Path, blob: bytes) -> None:
        _cache_write(path, lambda f: f.write(blob))


def _cache_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """A cache that cannot be written (full disk, folder made read-only mid-run) fails the unit
    with one line naming the folder, as the up-front check (paths.usable_cache_dir) does."""
    try:
        _atomic_write(path, write)
    except OSError as e:
        raise UserError(
            f"cannot write to the cache ({e.strerror or e.__class__.__name__})",
            path=path.parent,
            fix="free disk space there or make it writable, or pass --cache-dir (or set LVMBENCH_CACHE) to a writable folder",
        ) from None


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write to a unique temporary file next to ``path``, then rename over it.

    Concurrent runs may compute the same entry; each renames a complete file, the last one wins,
    and a reader never sees a partial file (rename is atomic within one file system).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache shared by a team must stay readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
