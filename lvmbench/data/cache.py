"""Decoded, resized arrays on disk so no epoch and no second run decodes a file twice.

Keys hash the source files' path, size and mtime, the reader and its options, the target size and
``PREPROCESS_VERSION``; entries are written to a temporary file and renamed, so concurrent runs
never see half-written arrays (at worst both compute the same entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

PREPROCESS_VERSION = 1


def file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


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
        _atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))

    @staticmethod
    def put_bytes(path: Path, blob: bytes) -> None:
        _atomic_write(path, lambda f: f.write(blob))


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
