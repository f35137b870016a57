"""Default locations: data root, cache, results. Environment variables override the defaults."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LVMBENCH_CACHE", Path.home() / ".cache" / "lvmbench"))


def data_root(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("LVMBENCH_DATA")
    return Path(env) if env else None
