"""``lvmbench status``: the grid at a glance, per suite x encoder x task.

Each unit is one of: **done** (a result whose identity still holds: split, spec, code version and
data as ``eval`` would run them now), **stale** (a result whose identity changed: ``eval``
recomputes it), **unchecked** (a result whose identity could not be checked here: its data is not
available, or ``--no-check``), **running** (claimed by a live process: host, pid, Slurm job, age),
**failed** (its last run failed: the one-line error from ``<result>.json.failed``) or **missing**
(planned, nothing there; only known when ``--encoder`` names the plan). Claims whose owner is gone
are listed as dead and removed by ``--clear-stale``.

Nothing here writes, except ``--clear-stale`` removing dead claims that lvmbench created.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from lvmbench import encoders, runner
from lvmbench.data.fingerprint import data_fingerprint
from lvmbench.data.synth import synthetic_suite_root
from lvmbench.data.task_data import load_task_data
from lvmbench.errors import UserError
from lvmbench.failures import read_failure
from lvmbench.identity import differences
from lvmbench.launch import claims as claim_mod
from lvmbench.paths import cache_root
from lvmbench.protocols.declared import has_transformer_recipe, resolve_settings
from lvmbench.results import read_result
from lvmbench.runner.facts import CachedEncoder, FactsFile, NotCached
from lvmbench.runner.planner import plan_units, resolve_data_root
from lvmbench.runner.request import EvalRequest, Planned
from lvmbench.runner.triager import current_identity
from lvmbench.suites import get_suite
from lvmbench.tasks import get_task

STATES = ("done", "stale", "unchecked", "running", "failed", "missing")


@dataclass
class Unit:
    key: str
    result: Path | None = None
    lock: Path | None = None
    failed: Path | None = None
    state: str = "missing"
    detail: str = ""


@dataclass
class Grid:
    units: dict[str, Unit] = field(default_factory=dict)
    claims: list[claim_mod.ClaimState] = field(default_factory=list)
    cleared: list[Path] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)


def scan(results: Path, suite: str | None, encoder: str | None) -> dict[str, Unit]:
    """Result files, claims and failure records under ``results``, keyed by unit path."""
    units: dict[str, Unit] = {}
    if not results.is_dir():
        return units
    for path in sorted(results.rglob("*.json*")):
        rel = path.relative_to(results).parts
        if len(rel) != 5 or rel[0].startswith("_") or any(p.startswith(".") for p in rel):
            continue  # reports (_audit, _jobs), temp files, anything not at a unit's place
        if (suite and rel[0] != suite) or (encoder and rel[1] != encoder) or not path.is_file():
            continue
        name = rel[-1]
        for suffix, slot in ((".json", "result"), (".json.lock", "lock"), (".json.failed", "failed")):
            if name.endswith(suffix):
                key = "/".join(rel[:-1] + (name[: len(name) - len(suffix)] + ".json",))
                setattr(units.setdefault(key, Unit(key)), slot, path)
                break
    return units


def group_of(key: str) -> tuple[str, str, str]:
    suite, enc, sha, task, _ = key.split("/")
    return suite, f"{enc}@{sha}", task


class IdentityCheck:
    """``runner.triage``'s question without running anything: would ``eval`` recompute it?
    (The encoder's pooling is left to ``eval``: it needs the model built.)"""

    def __init__(self, data_root: Path | None, cache_dir: Path | None):
        self.data_root, self.cache_dir = data_root, cache_dir
        self.roots: dict[str, Path | UserError | None] = {}
        self.data: dict[tuple[str, str], object] = {}

    def root(self, suite: str) -> Path | UserError | None:
        if suite not in self.roots:
            try:
                if get_suite(suite).synthetic:
                    r = synthetic_suite_root(self.data_root, self.cache_dir, generate=False)
                    self.roots[suite] = r if r.is_dir() else UserError(f"the {suite} suite's synthetic data is not at {r}; pass the --cache-dir (or --data-root) eval used")
                else:
                    self.roots[suite] = resolve_data_root(EvalRequest(encoder="-", suite=suite, data_root=self.data_root, cache_dir=self.cache_dir))
            except UserError as e:
                self.roots[suite] = e
        return self.roots[suite]

    def task_data(self, p: Planned):
        k = (p.unit.suite, p.task.id)
        if k not in self.data:
            root = self.root(p.unit.suite)
            if isinstance(root, UserError) or root is None:
                self.data[k] = root or UserError("no data root; pass --data-root (or set LVMBENCH_DATA)")
            else:
                try:
                    d = load_task_data(p.task, root, suite=p.unit.suite)
                    self.data[k] = (d, data_fingerprint(d))
                except UserError as e:
                    self.data[k] = e
        return self.data[k]

    def verdict(self, p: Planned, identity: dict) -> tuple[str, str]:
        got = self.task_data(p)
        if isinstance(got, UserError):
            return "unchecked", f"data not available: {str(got)[:160]}"
        data, fingerprint = got
        old = {k: v for k, v in identity.items() if k != "encoder"}
        changed = differences(old, current_identity(p, data, fingerprint, None))
        return ("stale", f"{', '.join(changed)} changed since it ran") if changed else ("done", "")


def planned_of(unit, cache_dir: Path | None = None) -> Planned:
    """The plan entry behind a result's unit, built as ``runner.plan`` builds it."""
    task = get_task(unit.task_id).for_suite(unit.suite)
    kind = encoder_kind(unit, cache_dir)
    recipe = "transformer" if kind == "transformer" and has_transformer_recipe(task, unit.protocol) else "default"
    return Planned(unit, task, resolve_settings(task, unit.protocol, kind=kind), recipe)


def encoder_kind(unit, cache_dir: Path | None) -> str:
    """The unit's encoder kind: from the facts ``eval`` cached, else from the architecture (torch)."""
    try:
        return FactsFile(cache_dir or cache_root(), unit.encoder, unit.weights_sha256).get("kind")
    except NotCached:
        return encoders.encoder_kind(unit.encoder) if encoders.is_known(unit.encoder) else "cnn"


def plan_of(req: EvalRequest) -> list[Planned]:
    """``runner.plan`` on the cached encoder facts when they are there (no torch), else loaded."""
    try:
        return plan_units(req, CachedEncoder(req.encoder, req.weights, req.cache_dir or cache_root()))[0]
    except NotCached:
        return runner.plan(req)[0]


def collect(results: Path, suite: str | None = None, req: EvalRequest | None = None, check: bool = True, data_root: Path | None = None, cache_dir: Path | None = None) -> Grid:
    grid = Grid()
    planned: dict[str, Planned] = {}
    if req is not None:
        planned = {p.unit.key(): p for p in plan_of(req)}
    encoder = req.encoder if req is not None else None
    units = scan(results, suite, encoder)
    for key in planned:
        units.setdefault(key, Unit(key))
    queued = submitted_units(results)  # units of submitted job arrays are planned too
    for key in queued:
        parts = key.split("/")
        if len(parts) == 5 and (not suite or parts[0] == suite) and (not encoder or parts[1] == encoder):
            units.setdefault(key, Unit(key))
    checker = IdentityCheck(data_root, cache_dir)
    for key, u in units.items():
        if u.result is not None:
            u.state, u.detail = result_state(u, planned.get(key), checker if check else None)
        if u.failed is not None:
            rec = read_failure(u.failed)
            if rec and (u.result is None or u.failed.stat().st_mtime >= u.result.stat().st_mtime):
                u.state, u.detail = "failed", f"{rec.get('error', '')}{log_hint(results, rec)}"
    locks = [u.lock for u in units.values() if u.lock is not None]
    jobs = {o["job"] for o in (claim_mod.read_owner(lk) or {} for lk in locks) if o.get("job")}
    waiting = {k: queued[k] for k, u in units.items() if k in queued and u.result is None and u.failed is None and u.lock is None}
    alive = claim_mod.slurm_jobs_alive(jobs | set(waiting.values()))
    for key, job in waiting.items():
        state = (alive or {}).get(job)
        units[key].detail = f"Slurm array task {job}" + (f" {state.lower()}" if state else "")
    for u in units.values():
        if u.lock is None:
            continue
        c = claim_mod.inspect(u.lock, alive)
        if c.state in ("running", "unverified"):
            u.state, u.detail = "running", c.describe() + (f" ({c.why})" if c.why else "")
        else:
            grid.claims.append(c)
    grid.units = units
    grid.jobs = job_lines(results)
    return grid


def result_state(u: Unit, p: Planned | None, checker: IdentityCheck | None) -> tuple[str, str]:
    try:
        rec = read_result(u.result)
    except UserError as e:
        return "stale", f"unreadable ({str(e)[:120]}); eval sets it aside and recomputes it"
    if checker is None:
        return "unchecked", "--no-check"
    try:
        return checker.verdict(p or planned_of(rec.unit, checker.cache_dir), rec.identity)
    except UserError as e:  # the task is gone or no longer loads, the subset cannot be drawn, ...
        return "unchecked", f"cannot plan it now ({str(e)[:120]})"


def log_hint(results: Path, rec: dict) -> str:
    job = rec.get("job")
    if not job:
        return ""
    folder = results / "_jobs" / str(job).split("_")[0]
    logs = sorted(folder.glob(f"{job}_*_log.err")) if folder.is_dir() else []
    return f" (job {job}; log {logs[0]})" if logs else f" (job {job})"


def submitted_units(results: Path) -> dict[str, str]:
    """Unit key -> the array task it was submitted to, from every ``_jobs/*/units.json``
    (the latest submission wins)."""
    out: dict[str, str] = {}
    folder = results / "_jobs"
    manifests = sorted(folder.glob("*/units.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    for m in manifests:
        try:
            for task, keys in json.loads(m.read_text(encoding="utf-8")).get("tasks", {}).items():
                out.update({str(k): str(task) for k in keys})
        except (OSError, ValueError, AttributeError):
            continue
    return out


def job_lines(results: Path, last: int = 5) -> list[str]:
    """The latest Slurm submissions of this results tree (their ``units.json``)."""
    out = []
    manifests = sorted((results / "_jobs").glob("*/units.json"), key=lambda p: p.stat().st_mtime) if (results / "_jobs").is_dir() else []
    for m in manifests[-last:]:
        try:
            doc = json.loads(m.read_text(encoding="utf-8"))
            n_units = sum(len(v) for v in doc.get("tasks", {}).values())
            out.append(f"job {doc.get('job')}: {len(doc.get('tasks', {}))} array task(s), {n_units} unit(s), submitted {doc.get('submitted_at')}; logs {m.parent}/")
        except (OSError, ValueError, AttributeError):
            continue
    return out


def clear_stale(grid: Grid) -> None:
    """Remove the dead claims; one line and a non-zero exit when some could not be removed (a
    read-only results tree): exit 0 would say the grid is clean."""
    refused: list[tuple[Path, str]] = []
    for c in grid.claims:
        if c.state != "stale":
            continue
        why = claim_mod.clear(c)
        if why is None:
            grid.cleared.append(c.lock)
        elif why != claim_mod.TAKEN:
            refused.append((c.lock, why))
    if refused:
        lock, why = refused[0]
        total = len(grid.cleared) + len(refused)
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise UserError(
            f"--clear-stale removed {len(grid.cleared)} of {total} dead claim(s); {len(refused)} could not be removed: {why}{more}",
            path=lock,
            fix="rerun where the results folder is writable (as its owner, or where it is not mounted read-only); `lvmbench status` without --clear-stale shows the grid",
        )


def report(grid: Grid, results: Path, clearing: bool) -> str:
    rows: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for u in grid.units.values():
        rows[group_of(u.key)][u.state] += 1
    if not rows:
        return f"no results, claims or planned units under {results}\n"
    table = [[*g, *(c[s] or "" for s in STATES)] for g, c in sorted(rows.items())]
    total = Counter()
    for c in rows.values():
        total.update(c)
    table.append(["total", "", "", *(total[s] for s in STATES)])
    lines = [tabulate(table, headers=["suite", "encoder", "task", *STATES], tablefmt="simple"), ""]
    for state in ("running", "failed", "stale", "missing"):
        for u in sorted((u for u in grid.units.values() if u.state == state), key=lambda u: u.key):
            if state != "missing" or u.detail:  # a missing unit has a line only when a job array holds it
                lines.append(f"{state:<9} {u.key}: {u.detail}")
    unchecked: dict[str, list[str]] = defaultdict(list)  # one line per reason, not per unit
    for u in grid.units.values():
        if u.state == "unchecked" and u.detail != "--no-check":
            unchecked[u.detail].append(u.key)
    for why, keys in sorted(unchecked.items()):
        lines.append(f"unchecked {len(keys)} unit(s) ({min(keys)}{', ...' if len(keys) > 1 else ''}): {why}")
    for c in grid.claims:
        if c.lock in grid.cleared:
            lines.append(f"cleared   {c.lock}: dead claim ({c.why}; {c.describe()})")
        elif c.state == "stale":
            lines.append(f"dead claim {c.lock}: {c.why} ({c.describe()})" + ("" if clearing else "; remove with --clear-stale"))
        else:
            lines.append(f"foreign   {c.lock}: {c.why}")
    lines += grid.jobs
    return "\n".join(lines).rstrip() + "\n"
