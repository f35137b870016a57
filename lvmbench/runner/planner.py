"""Plan: which units a request names, in a fixed order (``--shard i/n`` takes every n-th)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvmbench.errors import UserError
from lvmbench.heads import HEADS
from lvmbench.protocols.declared import DECLARED, has_transformer_recipe, resolve_settings
from lvmbench.protocols.settings import HEAD_MODELS
from lvmbench.runner.facts import EncoderFacts
from lvmbench.runner.request import EvalRequest, Planned
from lvmbench.spec import RunUnit, TaskSpec
from lvmbench.suites import get_suite, suite_data_root
from lvmbench.tasks import check_membership, get_task, tasks_in_suite


def select_tasks(req: EvalRequest) -> list[TaskSpec]:
    suite = get_suite(req.suite)
    if req.tasks:
        specs = [get_task(t) for t in req.tasks]
        for s in specs:
            if suite.name != "lvmmed" and not s.in_suite(suite.name):
                raise UserError(f"task '{s.id}' has no '{suite.name}' profile", fix="drop it from --tasks or run it with --suite lvmmed")
            check_membership(s, suite.name)  # an out-of-tree task stays in its own suites
    else:
        specs = tasks_in_suite(suite.name)
    return [s.for_suite(suite.name) for s in specs]


def resolve_data_root(req: EvalRequest, log: Any = None) -> Path | None:
    """``req.data_root`` is ``--data-root`` as given; LVMBENCH_DATA applies to real-data suites only.
    A synthetic suite writes only the datasets the request's tasks read (``--tasks kvasir_seg``:
    one, not every one)."""
    tasks = select_tasks(req) if get_suite(req.suite).synthetic else None
    return suite_data_root(req.suite, req.data_root, cache_dir=req.cache_dir, log=log, tasks=tasks)


def cli_settings(req: EvalRequest) -> dict[str, str]:
    """Command-line options that are protocol settings (``PromptSeg.plan_settings`` reads them)."""
    return {"decoder_weights": str(req.decoder_weights)} if req.decoder_weights is not None else {}


def plan_units(req: EvalRequest, encoder: EncoderFacts) -> tuple[list[Planned], list[str]]:
    """All units of the request (before skipping finished ones) and one line per unavailable task.
    ``encoder``: loaded (``pools.EncoderPool``) or cached (``facts.CachedEncoder``) facts."""
    encoder.check_known()
    sha = encoder.weights_sha256()
    kind = encoder.kind()
    planned: list[Planned] = []
    unavailable: list[str] = []
    for p in req.protocols or []:
        DECLARED.get(p)  # unknown protocol names fail early, with a suggestion
    for task in select_tasks(req):
        protos = [p for p in task.default_protocols or [] if not req.protocols or p in req.protocols]
        if req.protocols:
            protos += [p for p in req.protocols if p in task.protocols and p not in protos]
        for proto in protos:
            if proto not in DECLARED:
                unavailable.append(f"{task.id}: protocol '{proto}' ({task.family}) is not implemented yet; skipped")
                continue
            cls = DECLARED.get(proto)
            settings = resolve_settings(task, proto, kind=kind)
            recipe = "transformer" if kind == "transformer" and has_transformer_recipe(task, proto) else "default"
            if hasattr(cls, "plan_settings"):  # command-line options that belong to the settings (--decoder-weights)
                settings = cls.plan_settings(settings, cli_settings(req))
            heads = list(getattr(settings, "heads", ["linear"])) if cls.uses_head else ["linear"]
            if req.heads and cls.uses_head:
                for h in req.heads:
                    if h not in HEAD_MODELS:  # built-in heads are known without loading them (torch)
                        HEADS.get(h)  # an unknown head fails here, with a suggestion
                heads = list(req.heads)
            for head in heads:
                for seed in req.seeds:
                    for frac in req.fractions:
                        unit = RunUnit(suite=req.suite, task_id=task.id, protocol=proto, head=head, encoder=req.encoder,
                                       weights_sha256=sha, seed=seed, label_fraction=frac)
                        planned.append(Planned(unit, task, settings, recipe))
    planned.sort(key=lambda p: p.unit.key())
    check_unique(planned)
    if req.units is not None:
        wanted = set(req.units)
        planned = [p for p in planned if p.unit.key() in wanted]
    if req.shard:
        i, n = req.shard
        planned = planned[i::n]
    return planned, unavailable


def check_unique(planned: list[Planned]) -> None:
    """Two planned units with one result path would run twice and count as two seeds."""
    seen: set[str] = set()
    for p in planned:
        key = p.unit.key()
        if key in seen:
            raise UserError(
                f"the request names unit {key} twice",
                fix="list each seed, label fraction, protocol and head once (e.g. --seeds 0,1 not 0,0; --label-fraction 0.1 not 0.1,0.10)",
            )
        seen.add(key)
