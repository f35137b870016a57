"""The launcher's share of the engine: plan once, skip finished units, cut the rest into bundles.

A launcher never runs units itself: it plans and triages like ``lvmbench eval`` (finished units
whose identity still holds are skipped, stale ones recomputed), groups what is left, and hands each
group to a worker that runs ``lvmbench.runner.run`` on exactly those unit keys. The per-unit claims
keep two workers (or two launches) from computing one unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.paths import _unusable_folder, usable_cache_dir
from lvmbench.runner import EncoderPool, EvalRequest, Planned, Summary, TaskDataPool, below_baseline, plan_units, resolve_data_root, skipped_line, triage
from lvmbench.suites import get_suite

# Protocols that train a network end to end: one unit is minutes to hours on a GPU, so each gets
# its own worker slot (and its own array task). Relative cost orders the queue, longest first, so
# the last unit to start is a short one. Protocols not listed count as long: safe for new ones.
LONG_COST = {"detection": 8.0, "seg3d": 6.0, "finetune": 3.0, "seg2d": 3.0}
SHORT_PROTOCOLS = {"knn", "linear", "retrieval", "similarity_queries"}
DEFAULT_LONG_COST = 4.0

# Detection and segmentation (2D, 3D) keep a resume checkpoint at epoch boundaries (crash recovery;
# lvmbench.protocols.resume); a requeued unit continues there. The other protocols (fine-tuning,
# feature-based units) restart a unit that was stopped half-way.
RESUMES = {"detection", "seg2d", "seg3d"}


@dataclass
class Pending:
    planned: list[Planned]  # every unit of the request
    todo: list[Planned]  # what a launch must run (finished, current units skipped)
    summary: Summary  # skipped / stale / unavailable, as ``run`` would report them


def absolute(req: EvalRequest) -> EvalRequest:
    """Workers may start in another folder (a Slurm node): every path made absolute, once."""
    def fix(p: Path | None) -> Path | None:
        return None if p is None else Path(p).expanduser().absolute()

    return dataclasses.replace(req, results=fix(req.results), weights=fix(req.weights), data_root=fix(req.data_root), cache_dir=fix(req.cache_dir))


def pending(req: EvalRequest, log: Callable[[str], None], prepare: bool = True) -> Pending:
    """Plan and triage in the launching process, as ``runner.run`` does before its loop;
    ``prepare``: also write synthetic data and check the cache and checkpoint (not for a dry run)."""
    summary = Summary()
    encoders = EncoderPool(req.encoder, req.weights, req.cache_dir)
    planned, summary.unavailable = plan_units(req, encoders)
    for line in summary.unavailable:
        log(f"skip  {line}")
    if prepare and get_suite(req.suite).synthetic:
        resolve_data_root(req, log)  # write the synthetic data once here, not in N workers at once
    todo = triage(req, planned, TaskDataPool(req), encoders, summary, log)
    if summary.skipped:
        log(skipped_line(summary))
    if todo and prepare:
        usable_cache_dir(req.cache_dir)  # one line here, not one per worker
        problem = _unusable_folder(req.results)  # the same probe: a read-only tree fails here, not in N workers or jobs
        if problem:
            raise UserError(f"cannot write results there ({problem})", path=req.results, fix="pass a writable --results DIR")
        if req.weights is not None:
            encoders.get(todo[0].unit.seed)  # a bad checkpoint fails once, before any job
    return Pending(planned, todo, summary)


def cost(p: Planned) -> float:
    if p.unit.protocol in SHORT_PROTOCOLS:
        return 1.0
    return LONG_COST.get(p.unit.protocol, DEFAULT_LONG_COST)


def bundles(todo: list[Planned], size: int) -> list[list[Planned]]:
    """Long units alone; short units together, at most ``size`` per bundle, in unit order (so the
    units of one task, which share its data and cached features, sit side by side): a job start
    (scheduling, imports, loading the encoder) costs more than a kNN unit. Longest first."""
    out = [[p] for p in todo if p.unit.protocol not in SHORT_PROTOCOLS]
    short = sorted((p for p in todo if p.unit.protocol in SHORT_PROTOCOLS), key=lambda p: p.unit.key())
    out += [short[i : i + size] for i in range(0, len(short), size)]
    out.sort(key=lambda b: (-sum(cost(p) for p in b), b[0].unit.key()))
    return out


def keys(bundle: list[Planned]) -> list[str]:
    return [p.unit.key() for p in bundle]


def merge(into: Summary, part: Summary | dict) -> Summary:
    """Add a worker's summary (a ``Summary`` or its ``dataclasses.asdict``) to the launch's."""
    part = part if isinstance(part, dict) else dataclasses.asdict(part)
    for f in dataclasses.fields(Summary):
        if f.name in ("interrupted", "below_baseline", "unavailable", "stale"):
            continue  # the launch's own triage reported stale and unavailable units already
        getattr(into, f.name).extend(part.get(f.name) or [])
    into.interrupted = into.interrupted or bool(part.get("interrupted"))
    return into


def finish(req: EvalRequest, pend: Pending, summary: Summary) -> Summary:
    """Synthetic suites: the units that did not beat their baseline, over the whole launch."""
    if get_suite(req.suite).synthetic and not summary.interrupted:
        ok = set(summary.done) | set(summary.skipped)
        summary.below_baseline = below_baseline(req.results, [p.unit for p in pend.planned if p.unit.key() in ok])
    return summary


def describe(items: list[list[Planned]]) -> list[list[str]]:
    """One table row per bundle: index, units, protocol mix, whether a stopped unit resumes."""
    rows = []
    for i, b in enumerate(items):
        protos = sorted({p.unit.protocol for p in b})
        resumes = "resumes at epoch" if all(p.unit.protocol in RESUMES for p in b) else "restarts"
        rows.append([str(i), str(len(b)), ",".join(protos), resumes, b[0].unit.key() + (f" (+{len(b) - 1})" if len(b) > 1 else "")])
    return rows
