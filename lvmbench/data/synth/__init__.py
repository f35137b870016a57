"""Tiny synthetic copies of every dataset, written in the publisher's raw layout.

Each writer draws images with learnable structure (classes look different, masks follow visible
shapes, boxes surround objects), so a working pipeline scores clearly above chance through the
same readers real data uses. ``write_all(out)`` writes every registered dataset under ``out``.
Writers register with ``@SYNTH.register("<folder name>")`` and take ``(out_dir, rng)``; a plugin
package registers its own through the ``lvmbench.synth`` entry-point group (entry point name = the
dataset folder its task's smoke profile reads).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lvmbench.errors import UserError
from lvmbench.paths import cache_root, usable_cache_dir
from lvmbench.registry import Registry, import_members, load_entry_points

# Bump when the writers' shared draws change (every dataset is redrawn, into a new folder).
SYNTH_VERSION = 3
# A writer's own revision (1 when absent): bump it when only that writer's output changes, so that
# dataset alone is rewritten in place from the same seed and every other dataset (and the results
# measured on it) stays as it was. Prostate 2: BIDMC's gland made visible (it was darker than the
# pelvis around it).
REVISIONS: dict[str, int] = {"Prostate": 2}

Writer = Callable[[Path, np.random.Generator], None]


def _load(reg: Registry[Writer]) -> None:
    import_members(__name__)
    load_entry_points(reg, "lvmbench.synth")  # a plugin's writer: (out_dir, rng) -> None, named by its folder


SYNTH: Registry[Writer] = Registry("synthetic dataset", _load)


def write_all(out: Path, only: list[str] | None = None, seed: int = 0, log: Callable[[str], None] | None = None) -> list[str]:
    """Write every (or the named) synthetic dataset into ``out/<name>``; returns the names written.

    ``out`` must be new, empty or a synthetic root lvmbench wrote (its marker): a folder the harness
    did not create is never written into, and only dataset folders carrying the harness's own
    marker are ever replaced (when their version is outdated). Concurrent writers serialise on a
    lock in ``out``; each dataset is written into a temporary folder and renamed into place, so an
    interrupted run never leaves a half-written dataset that later looks complete.
    """
    names = list(SYNTH.names() if only is None else only)
    everything = SYNTH.names()  # a dataset's seed is its place among all writers: a subset gets the same data
    for name in names:
        SYNTH.get(name)  # a misspelt name fails before anything is written
    check_target(out, names)
    if out.is_dir() and all(_is_current(out / n) for n in names):
        return []  # nothing to write: no lock, so a complete root on read-only storage works
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot write the synthetic data folder ({e.strerror or e.__class__.__name__})", path=out, fix="pick a folder you can write to") from None
    with _locked(fd, out, log) as exclusive:
        check_target(out, names)  # another process may have changed it while this one waited
        _mark_root(out)
        if exclusive:  # without the lock a temporary folder may be a live writer's
            _remove_stale_tmp(out)
        todo = [n for n in names if not _is_current(out / n)]
        if todo and log:
            log(f"writing {len(todo)} synthetic dataset(s) into {out} (first use only; a few seconds)")
        for name in todo:
            _write_one(out, name, np.random.default_rng([seed, everything.index(name), SYNTH_VERSION]))
    return todo


def ensure_synthetic(out: Path, log: Callable[[str], None] | None = None, only: list[str] | None = None) -> Path:
    """The smoke suite's data root, generated on first use: every dataset, or the ``only`` ones
    (the folders the selected tasks read; an empty list writes nothing)."""
    if only is not None and not only:
        return out
    write_all(out, only, log=log)
    return out


def synthetic_root(cache_dir: Path | None = None) -> Path:
    """Where the smoke suite's synthetic data is generated: under ``--cache-dir`` when one is given."""
    return (cache_dir or cache_root()) / f"synth-v{SYNTH_VERSION}"


def synthetic_suite_root(explicit: Path | None, cache_dir: Path | None = None, *, generate: bool = True, log: Callable[[str], None] | None = None,
                         only: list[str] | None = None) -> Path:
    """The data root of a synthetic suite: its own folder under the cache, never the user's data.

    ``explicit`` is ``--data-root`` as typed (not LVMBENCH_DATA). LVMBENCH_DATA is ignored with a
    note: README tells users to export it for real data, and a smoke run must work (and must not
    touch that data) in such a shell. An explicit ``--data-root`` is a deliberate request that
    cannot be honoured silently: it must be a synthetic root lvmbench wrote, or the run stops.
    ``only``: the dataset folders to write (default: every registered one).
    """
    if explicit is not None:
        if not is_synthetic_root(Path(explicit)):
            raise UserError(
                "the smoke suite runs on lvmbench's own synthetic data and this is not a synthetic data root lvmbench wrote",
                path=explicit,
                fix="drop --data-root (smoke data is generated under the cache), or write one with `lvmbench data synth DIR` and pass that",
            )
        root = Path(explicit)
    else:
        env = os.environ.get("LVMBENCH_DATA")
        if env and log:
            log(f"note: the smoke suite uses its own synthetic data; LVMBENCH_DATA ({env}) is ignored")
        root = synthetic_root(usable_cache_dir(cache_dir) if generate else cache_dir)
    return ensure_synthetic(root, log, only) if generate else root


# -- ownership: what the harness may write -------------------------------------------------------

MARKER = ".complete"  # in each dataset folder the harness wrote
ROOT_MARKER = ".lvmbench-synth.json"  # in each synthetic root the harness created
LOCK = ".lvmbench-synth.lock"
_FIX_ELSEWHERE = "pass a new or empty folder (`lvmbench eval --suite smoke` keeps its synthetic data under the cache by itself)"


def _marker(folder: Path) -> dict | None:
    """The harness's marker in a dataset folder, or None when lvmbench did not write the folder."""
    try:
        doc = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("version"), int) else None


def _is_current(folder: Path) -> bool:
    stamp = _marker(folder) or {}
    return stamp.get("version") == SYNTH_VERSION and stamp.get("revision", 1) == REVISIONS.get(folder.name, 1)


def _is_own_entry(p: Path) -> bool:
    if p.name in (ROOT_MARKER, LOCK) or _tmp_of(p.name):
        return True
    return p.name in SYNTH.names() and p.is_dir() and _marker(p) is not None


def _tmp_of(name: str) -> bool:
    return any(name.startswith(f".{n}.") for n in SYNTH.names())


def is_synthetic_root(root: Path) -> bool:
    """True for a folder lvmbench created for synthetic data (its root marker, or, for roots
    written before the marker existed, nothing in it but dataset folders carrying their marker)."""
    if not root.is_dir():
        return False
    if (root / ROOT_MARKER).is_file():
        return True
    entries = list(root.iterdir())
    return bool(entries) and all(_is_own_entry(p) for p in entries)


def check_target(out: Path, names: list[str]) -> None:
    """Refuse (one line) to write into anything the harness did not create; reads only."""
    if out.exists() and not out.is_dir():
        raise UserError("not a folder", path=out, fix=_FIX_ELSEWHERE)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_synthetic_root(out):
        theirs = sorted(p.name for p in out.iterdir() if not _is_own_entry(p))[:3]
        raise UserError(
            f"refusing to write synthetic data into a folder lvmbench did not create (it holds {', '.join(theirs)})",
            path=out,
            fix=_FIX_ELSEWHERE,
        )
    for name in names:
        target = out / name
        if target.exists() and (not target.is_dir() or _marker(target) is None):
            raise UserError(
                f"refusing to replace '{name}': lvmbench did not write it (no {MARKER} marker)",
                path=target,
                fix=f"move it out of {out}, or {_FIX_ELSEWHERE}",
            )


def _mark_root(out: Path) -> None:
    if not (out / ROOT_MARKER).is_file():
        (out / ROOT_MARKER).write_text(json.dumps({"format": "lvmbench-synth", "note": "written by `lvmbench data synth`; safe to delete"}) + "\n", encoding="utf-8")


def _remove_stale_tmp(out: Path) -> None:
    """Temporary folders of a writer that was killed; under the lock no live writer owns one."""
    for p in out.iterdir():
        if _tmp_of(p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _write_one(out: Path, name: str, rng: np.random.Generator) -> None:
    target = out / name
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
    try:
        SYNTH.get(name)(tmp, rng)
        stamp = {"version": SYNTH_VERSION, "revision": REVISIONS.get(name, 1), "writer": "lvmbench", "pid": os.getpid(), "written_at": time.time()}
        (tmp / MARKER).write_text(json.dumps(stamp), encoding="utf-8")
        if target.exists():
            if _marker(target) is None:  # checked before; never delete what the harness did not write
                raise UserError(f"refusing to replace '{name}': lvmbench did not write it", path=target, fix=_FIX_ELSEWHERE)
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _locked(fd: int, out: Path, log: Callable[[str], None] | None) -> Iterator[bool]:
    """An exclusive ``flock`` on ``fd`` (``out/.lvmbench-synth.lock``: first smoke runs started
    together), closed on exit; yields False where the file system has no ``flock``."""
    try:
        yield _acquire(fd, out, log)
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, out: Path, log: Callable[[str], None] | None) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if log:
            log(f"waiting for another lvmbench process writing synthetic data into {out}")
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        return False
    return True
