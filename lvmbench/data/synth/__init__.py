"""Tiny synthetic copies of every dataset, written in the publisher's raw layout.

Each writer draws images with learnable structure (classes look different, masks follow visible
shapes, boxes surround objects), so a working pipeline scores clearly above chance through the
same readers real data uses. ``write_all(out)`` writes every registered dataset under ``out``.
Writers register with ``@SYNTH.register("<folder name>")`` and take ``(out_dir, rng)``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lvmbench.registry import Registry

# Bump when any writer changes: the smoke suite regenerates into a new folder.
SYNTH_VERSION = 2

Writer = Callable[[Path, np.random.Generator], None]


def _load(reg: Registry[Writer]) -> None:
    import lvmbench.data.synth as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")


SYNTH: Registry[Writer] = Registry("synthetic dataset", _load)


def write_all(out: Path, only: list[str] | None = None, seed: int = 0) -> list[str]:
    """Write every (or the named) synthetic dataset into ``out/<name>``; returns the names.

    Each dataset is written into a temporary folder and renamed into place, so an interrupted
    run never leaves a half-written dataset that later looks complete.
    """
    out.mkdir(parents=True, exist_ok=True)
    names = only or SYNTH.names()
    for i, name in enumerate(names):
        target = out / name
        if (target / ".complete").is_file():
            continue
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
        try:
            SYNTH.get(name)(tmp, np.random.default_rng([seed, i, SYNTH_VERSION]))
            (tmp / ".complete").write_text(json.dumps({"version": SYNTH_VERSION}))
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return names


def ensure_synthetic(out: Path) -> Path:
    """The smoke suite's data root, generated on first use."""
    write_all(out)
    return out
