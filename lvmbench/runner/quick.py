"""The answer to a request whose every unit is already done, without loading torch or the encoder.

``lvmbench eval`` on a finished grid used to cost seconds of imports (torch, timm, the protocols)
and an encoder build to print "0 done, N skipped". Here the plan and the triage run as in
``executor.run``, on the cached encoder facts (``facts.CachedEncoder``) and the protocols'
declarations; when every planned unit is finished under its current identity the summary is the
answer. Anything else (a fact not cached, a unit missing, stale or unreadable, a claim held,
``--overwrite``) returns None and the full path runs, which prints and does what it always did.
"""

from __future__ import annotations

import math
from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.paths import cache_root
from lvmbench.results import read_result, result_path
from lvmbench.runner.data_pool import TaskDataPool
from lvmbench.runner.facts import CachedEncoder, NotCached
from lvmbench.runner.planner import plan_units
from lvmbench.runner.request import EvalRequest, Summary
from lvmbench.runner.triager import triage
from lvmbench.spec import RunUnit
from lvmbench.stats import higher_is_better
from lvmbench.suites import get_suite

# A synthetic-suite unit must beat its baseline by this much (metric units): a pipeline check that
# passes at chance checks nothing.
BASELINE_MARGIN = 0.05


def all_done(req: EvalRequest) -> Summary | None:
    """The summary ``executor.run`` would return when nothing is left to run, else None."""
    if req.overwrite:
        return None
    try:
        encoder = CachedEncoder(req.encoder, req.weights, req.cache_dir or cache_root())
        planned, unavailable = plan_units(req, encoder)
        summary = Summary(unavailable=unavailable)
        notes: list[str] = []
        todo = triage(req, planned, TaskDataPool(req), encoder, summary, notes.append)
    except NotCached:
        return None
    if todo or summary.stale or notes:
        return None  # work to do, or something to say about a result: the full path says it
    if get_suite(req.suite).synthetic:
        summary.below_baseline = below_baseline(req.results, [p.unit for p in planned])
    return summary


def skipped_line(summary: Summary) -> str:
    return f"skip  {len(summary.skipped)} unit(s) already have results for this split, spec and code (use --overwrite to redo)"


def below_baseline(results: Path, units: list[RunUnit]) -> list[str]:
    """Units whose primary metric does not beat the baseline their result states (chance, the
    training prior, the best trivial mask, the prompt box, random boxes), one short description each."""
    out = []
    for unit in units:
        try:
            rec = read_result(result_path(results, unit))
        except UserError:
            continue
        base = rec.extra.get("baseline") or {}
        value = base.get("value")
        if value is None or not math.isfinite(float(value)) or base.get("metric") != rec.primary_metric:
            out.append(f"{unit.key()} (no baseline recorded)")
            continue
        sign = 1.0 if higher_is_better(rec.primary_metric) else -1.0
        if sign * (rec.primary - float(value)) <= BASELINE_MARGIN:
            out.append(f"{unit.key()} ({rec.primary_metric} {rec.primary:.3f} vs {base.get('predictor', 'baseline')} {float(value):.3f})")
    return out
