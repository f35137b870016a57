"""Triage: each planned unit's identity against what is on disk.

A finished unit whose identity still holds is skipped; a stale one (its split, spec, code, data,
training subset, encoder or run options changed) is recomputed, or kept with ``--keep-stale``; an
unreadable or hand-edited one is recomputed. A result about to be replaced is first set aside as
``<unit>.json.replaced`` (then ``.replaced.1``, ``.replaced.2`` ...): every generation is kept.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

from lvmbench.data.cache import PREPROCESS_VERSION
from lvmbench.data.fingerprint import train_subset_hash
from lvmbench.data.task_data import TaskData
from lvmbench.errors import UserError, user_message
from lvmbench.identity import differences, eval_code, unit_identity
from lvmbench.protocols.declared import DECLARED
from lvmbench.results import Claim, read_result, result_path
from lvmbench.runner.data_pool import TaskDataPool
from lvmbench.runner.facts import EncoderFacts
from lvmbench.runner.request import EvalRequest, Planned, Summary
from lvmbench.spec import RunOptions


def current_identity(p: Planned, data: TaskData, fingerprint: str, encoder: dict | None = None, run: RunOptions | None = None) -> dict[str, str]:
    """The identity the unit's result would have if it ran now."""
    code = eval_code(DECLARED.get(p.unit.protocol).version, PREPROCESS_VERSION)
    options = run.identity() if run is not None else None
    return unit_identity(p.task, p.unit, p.settings, code, data.split.hash(), fingerprint, train_subset_hash(data, p.unit), encoder, options)


def triage(req: EvalRequest, planned: list[Planned], pool: TaskDataPool, encoders: EncoderFacts, summary: Summary, log: Callable[[str], None]) -> list[Planned]:
    """The units to run; skipped and stale units are noted in ``summary``."""
    todo: list[Planned] = []
    for p in planned:
        path = result_path(req.results, p.unit)
        if req.overwrite or not path.is_file():
            todo.append(p)
            continue
        try:
            old = read_result(path)
        except UserError as e:
            log(f"redo  {p.unit.key()}: {user_message(e)}; recomputed (the old file is kept as {aside_name(path).name})")
            todo.append(p)
            continue
        data = pool.get(p.task)
        if isinstance(data, UserError):
            todo.append(p)  # fails with the data's own message when its turn comes
            continue
        changed = differences(old.identity, current_identity(p, data, pool.fingerprints[p.task.id], encoders.info(p.unit.seed), req.run))
        if not changed:
            summary.skipped.append(p.unit.key())
            tidy_claim(path)
            continue
        summary.stale.append(p.unit.key())
        if req.keep_stale:
            log(f"stale {p.unit.key()}: {', '.join(changed)} changed since it ran; kept (--keep-stale)")
            continue
        log(f"stale {p.unit.key()}: {', '.join(changed)} changed since it ran; recomputed (the old file is kept as {aside_name(path).name})")
        todo.append(p)
    return todo


def finished_meanwhile(req: EvalRequest, p: Planned, data: TaskData, fingerprint: str, encoders: EncoderFacts) -> bool:
    """Another process finished this unit (with the current identity) while we waited for it."""
    if req.overwrite:
        return False
    path = result_path(req.results, p.unit)
    if not path.is_file():
        return False
    try:
        old = read_result(path)
    except UserError:
        return False
    return not differences(old.identity, current_identity(p, data, fingerprint, encoders.info(p.unit.seed), req.run))


def aside_name(path: Path) -> Path:
    """The first free name of ``<name>.replaced``, ``<name>.replaced.1``, ``.replaced.2`` ...
    (anything at a name, a file or a folder, makes it taken)."""
    base = path.with_name(path.name + ".replaced")
    for i in itertools.count():
        cand = base if i == 0 else base.with_name(f"{base.name}.{i}")
        if not os.path.lexists(cand):
            return cand
    raise AssertionError("unreachable")


def keep_aside(path: Path, overwrite: bool) -> Path | None:
    """Set a result about to be replaced without ``--overwrite`` (stale, unreadable, hand-edited)
    aside under the next free ``.replaced`` name; never overwrites an older generation (the name is
    taken with a hard link, which fails when another process took it first)."""
    if overwrite or not path.is_file():
        return None
    while True:
        target = aside_name(path)
        try:
            os.link(path, target)
        except FileExistsError:
            continue  # taken meanwhile: the next generation
        except OSError as e:
            if e.errno not in (1, 18, 38, 95):  # EPERM, EXDEV, ENOSYS, EOPNOTSUPP: no hard links here
                raise UserError(f"cannot keep the old result aside ({e.strerror})", path=target, fix="move it away by hand, or rerun with --overwrite") from None
            if os.path.lexists(target):
                continue
            try:
                os.rename(path, target)
            except OSError as e2:
                raise UserError(f"cannot keep the old result aside ({e2.strerror})", path=target, fix="move it away by hand, or rerun with --overwrite") from None
            return target
        try:
            os.unlink(path)
        except OSError as e:
            raise UserError(f"cannot replace the old result ({e.strerror})", path=path, fix="move it away by hand, or rerun with --overwrite") from None
        return target


def tidy_claim(path: Path) -> None:
    """Remove the lock file a killed process left next to a finished result (nobody holds it)."""
    claim = Claim(path)
    if claim.lock.exists():
        try:
            if claim.acquire():
                claim.release()
        except UserError:
            pass  # a read-only results tree: the leftover lock is harmless
