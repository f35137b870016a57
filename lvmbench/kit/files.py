"""A file's sha256, read in blocks: how weights, decoder checkpoints and imported files are named
in a result's identity (one helper, so the whole package hashes the same way)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
