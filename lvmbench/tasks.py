"""The task catalog: every task file (``lvmbench.task_files``) validated — protocol settings, reader
options and metric names, also in each suite profile — into the ``TASKS`` registry.

A task file that does not load (bad YAML, an unknown key, a task id defined twice) never breaks the
others: it is listed as broken with its one-line error (``broken_tasks``, ``lvmbench tasks``), and
only naming it (``--tasks``, ``data verify``) raises that error. ``task_origin`` says where a task
came from (folder, plugin package), which every result records.
"""

from __future__ import annotations

from pathlib import Path

from lvmbench.data.cases import validate_task_readers
from lvmbench.errors import UserError
from lvmbench.metric_names import check_metric_names
from lvmbench.protocols.declared import validate_task_settings
from lvmbench.registry import Registry
from lvmbench.spec import TaskSpec
from lvmbench.suites import get_suite
from lvmbench.task_checks import checked, checked_tasks
from lvmbench.task_files import (  # noqa: F401 (the catalog's API: reading, parsing and finding task files)
    MAX_TASK_FILE_BYTES,
    MAX_YAML_DEPTH,
    REPO_TASKS,
    check_out_of_tree,
    discover,
    is_builtin,
    parse_task_file,
    parsed_tasks,
    read_task_yaml,
    task_roots,
)


def load_task_file(path: Path) -> TaskSpec:
    """The task file, parsed and fully checked; a result remembered for these bytes, this place and
    this code is used instead of checking again (``lvmbench.task_checks``: no torch to load)."""
    return checked(parse_task_file(path), path, check_task)


def check_task(spec: TaskSpec) -> None:
    """The checks beyond the schema: protocol settings, reader options, metric names, also in
    every suite profile (these import the protocols, and with them torch)."""
    validate_task_settings(spec)  # every protocol setting, also in each suite profile, is typed
    validate_task_readers(spec)  # every reader option, also in profiles and OOD sets, is typed
    check_metric_names(spec)
    for suite in spec.profiles:
        check_metric_names(spec.for_suite(suite), f"profiles.{suite}.")


# task folder name -> (task file, its one-line error), for task files that did not load
BROKEN: dict[str, tuple[Path, UserError]] = {}
# task id -> {"folder": ..., "package": "name version" or None}
ORIGINS: dict[str, dict[str, str | None]] = {}


def _discover(reg: Registry[TaskSpec]) -> None:
    found = checked_tasks(check_task)
    BROKEN.clear()
    BROKEN.update(found.broken)
    ORIGINS.update(found.origins)
    reg._broken.clear()
    for name, (_, err) in found.broken.items():
        reg.add_broken(name, err)
    for tid, spec in found.specs.items():
        reg.add(tid, spec)


TASKS: Registry[TaskSpec] = Registry("task", _discover)


def broken_tasks() -> dict[str, tuple[Path, UserError]]:
    """Task files that did not load: folder name -> (file, error). Discovers the tasks first."""
    TASKS.names()
    return dict(sorted(BROKEN.items()))


def task_origin(spec: TaskSpec) -> dict[str, str | None]:
    """Where a task came from: its folder and the plugin package that provides it (if any)."""
    TASKS.names()
    got = ORIGINS.get(spec.id)
    if got is not None and spec.folder is not None and got["folder"] == str(spec.folder.resolve()):
        return dict(got)
    return {"folder": str(spec.folder.resolve()) if spec.folder else None, "package": None}


def get_task(name: str) -> TaskSpec:
    return TASKS.get(name)


def all_tasks() -> list[TaskSpec]:
    return [spec for _, spec in TASKS.items()]


def tasks_in_suite(suite: str) -> list[TaskSpec]:
    return [t for t in all_tasks() if t.in_suite(suite)]


def suite_tasks(task_ids: list[str] | None, suite: str | None) -> list[TaskSpec]:
    """Tasks by id (or all of the suite), with the suite's profile applied."""
    if suite:
        get_suite(suite)
    if task_ids:
        specs = [get_task(t) for t in task_ids]
    else:
        specs = [t for t in all_tasks() if t.in_suite(suite or "lvmmed")]
    return [s.for_suite(suite) if suite else s for s in specs]


def check_membership(spec: TaskSpec, suite: str) -> None:
    """A task from outside the repository runs only in the suites it names: its results never land
    in another suite's table (``lvmmed`` above all)."""
    if is_builtin(spec) or spec.in_suite(suite) or not (spec.suites or spec.profiles):
        return
    own = sorted({*spec.suites, *spec.profiles})
    raise UserError(f"task '{spec.id}' belongs to suite(s) {', '.join(own)}, not '{suite}'", fix=f"run it with --suite {own[0]}")
