"""Suites: which tasks run, on which data, with which profile of each task.

A task belongs to suite S when S is in its ``suites`` list or it has a ``profiles.S`` section; the
profile is deep-merged into the task spec (smaller sizes, fewer epochs, another data folder).

Besides the built-in suites (``lvmmed``, ``smoke``, ``shared-data``), any suite a task names is a
suite of its own (real data from ``--data-root``, its own leaderboard table, never mixed into the
LVM-Med tables); a plugin package may describe its suites through the ``lvmbench.suites`` entry
point group (an object mapping name -> description, or -> ``{description, data_root}``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from lvmbench.data.synth import synthetic_suite_root
from lvmbench.errors import UnknownNameError, UserError
from lvmbench.paths import data_root as explicit_or_env
from lvmbench.registry import dist_label, suggest
from lvmbench.spec import TaskSpec
from lvmbench.tasks import all_tasks, get_task, is_builtin


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    synthetic: bool = False
    default_data_root: str | None = None
    declared_by: str = "lvmbench"  # lvmbench | a plugin package | "tasks"


SUITES = {
    "lvmmed": Suite("lvmmed", "the 15 LVM-Med downstream tasks on real data from --data-root, paper protocols"),
    "smoke": Suite("smoke", "every task on generated synthetic data in the publishers' layouts, 32-64 px, 3-10 epochs; checks that every unit beats its baseline", synthetic=True),
    "shared-data": Suite(
        "shared-data",
        "tasks whose real data is in ../shared/data (subsets), small budgets",
        default_data_root=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
    ),
}


def _plugin_suites() -> dict[str, Suite]:
    out: dict[str, Suite] = {}
    for ep in entry_points(group="lvmbench.suites"):
        try:
            obj = ep.load()
            obj = obj() if callable(obj) else obj
            for name, v in dict(obj).items():
                info = v if isinstance(v, dict) else {"description": str(v)}
                root = info.get("data_root")
                out[str(name)] = Suite(str(name), str(info.get("description", "")), False, str(root) if root else None, dist_label(ep))
        except Exception as e:  # noqa: BLE001 - a broken plugin must not hide the other suites
            raise UserError(f"plugin suites '{ep.name}' from {dist_label(ep)} failed to load ({e.__class__.__name__}: {e})", fix="fix or uninstall that package") from None
    return out


def all_suites() -> dict[str, Suite]:
    """Built-in suites, plugin-described suites, and every other suite a task names."""
    out = dict(SUITES)
    for name, suite in _plugin_suites().items():
        out.setdefault(name, suite)
    members: dict[str, list[str]] = {}
    for t in all_tasks():
        for name in {*t.suites, *t.profiles}:
            members.setdefault(name, []).append(t.id)
    for name, ids in sorted(members.items()):
        if name not in out:
            out[name] = Suite(name, f"declared by task(s) {', '.join(sorted(ids))}; real data from --data-root", declared_by="tasks")
    return out


def get_suite(name: str) -> Suite:
    if name in SUITES:
        return SUITES[name]
    known = all_suites()
    if name in known:
        return known[name]
    hint = suggest(name, list(known))
    raise UnknownNameError(f"no suite '{name}'" + (f"; did you mean '{hint}'?" if hint else f"; known: {', '.join(known)}"))


def check_membership(spec: TaskSpec, suite: str) -> None:
    """A task from outside the repository runs only in the suites it names: its results never land
    in another suite's table (``lvmmed`` above all)."""
    if is_builtin(spec) or spec.in_suite(suite) or not (spec.suites or spec.profiles):
        return
    own = sorted({*spec.suites, *spec.profiles})
    raise UserError(f"task '{spec.id}' belongs to suite(s) {', '.join(own)}, not '{suite}'", fix=f"run it with --suite {own[0]}")


def suite_data_root(suite: str | None, data_root: Path | None, *, cache_dir: Path | None = None, generate: bool = True,
                    log: Callable[[str], None] | None = None) -> Path | None:
    """The data root ``lvmbench eval --suite S`` uses: ``--data-root`` > LVMBENCH_DATA > the suite's
    default. ``data_root`` is ``--data-root`` as typed; a synthetic suite never uses LVMBENCH_DATA
    (its data is generated under the cache, ``generate=False`` only names the folder)."""
    if suite and get_suite(suite).synthetic:
        return synthetic_suite_root(data_root, cache_dir, generate=generate, log=log or (lambda line: print(line, file=sys.stderr)))
    explicit = explicit_or_env(data_root)
    if explicit or not suite:
        return explicit
    default = get_suite(suite).default_data_root
    return Path(default) if default and Path(default).is_dir() else None


def suite_tasks(task_ids: list[str] | None, suite: str | None) -> list[TaskSpec]:
    """Tasks by id (or all of the suite), with the suite's profile applied."""
    if suite:
        get_suite(suite)
    if task_ids:
        specs = [get_task(t) for t in task_ids]
    else:
        specs = [t for t in all_tasks() if t.in_suite(suite or "lvmmed")]
    return [s.for_suite(suite) if suite else s for s in specs]
