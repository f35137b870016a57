"""Task discovery: every ``tasks/<id>/task.yaml`` next to the package, extra folders from
``LVMBENCH_TASK_PATH`` (os.pathsep-separated), and the ``lvmbench.tasks`` entry point group
(each entry point resolves to a folder of task folders, or a callable returning one).

A task file that does not load (bad YAML, an unknown key, a task id defined twice) never breaks the
others: it is listed as broken with its one-line error (``broken_tasks``, ``lvmbench tasks``), and
only naming it (``--tasks``, ``data verify``) raises that error. Tasks from outside this repository
(``LVMBENCH_TASK_PATH``, plugin packages) state their own suites and may not join ``lvmmed`` (the
LVM-Med tables and their family averages hold LVM-Med's tasks only); ``task_origin`` says where a
task came from (folder, plugin package), which every result records.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import yaml
from pydantic import ValidationError

from lvmbench.errors import UserError
from lvmbench.registry import Registry
from lvmbench.spec import TaskSpec

REPO_TASKS = Path(__file__).resolve().parents[1] / "tasks"


def task_roots() -> list[Path]:
    return [root for root, _ in _task_roots()]


def _task_roots() -> list[tuple[Path, str | None]]:
    """(folder of task folders, the plugin package providing it or None)."""
    from lvmbench.registry import dist_label, plugin_error

    roots: list[tuple[Path, str | None]] = [(REPO_TASKS, None)]
    for part in os.environ.get("LVMBENCH_TASK_PATH", "").split(os.pathsep):
        if part:
            roots.append((Path(part), None))
    for ep in entry_points(group="lvmbench.tasks"):
        try:
            obj = ep.load()
            roots.append((Path(obj() if callable(obj) else obj), dist_label(ep)))
        except Exception as e:  # noqa: BLE001 - one broken plugin must not hide every task
            BROKEN[f"<plugin {ep.name}>"] = (Path(ep.value), plugin_error(ep, "lvmbench.tasks", e))
    return roots


# A task file is a page of settings; anything far larger is a mistake or an attack.
MAX_TASK_FILE_BYTES = 1 << 20
MAX_YAML_DEPTH = 64


class _Refused(yaml.YAMLError):
    def __init__(self, what: str, mark: yaml.Mark | None):
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        super().__init__(what + where)


class _TaskLoader(yaml.SafeLoader):
    """``safe_load`` without anchors/aliases and with bounded nesting.

    Aliases are refused where they are parsed, before any node is built, so a billion-laughs
    file (ten aliases of ten aliases ...) costs nothing: ``safe_load`` would return a small graph
    of shared lists that explodes later, when the spec is validated, hashed or dumped.
    """

    _depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused("YAML anchors and aliases (&name, *name) are not allowed in task files", event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 (PyYAML) reads `1e-3` as the text "1e-3" (its floats need a dot); typed settings would
# then call a learning rate text. Task files take YAML 1.2's reading: such a token is a number.
_TaskLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_task_yaml(path: Path) -> object:
    """The parsed task file; one-line UserError for unreadable, huge, aliased or malformed YAML."""
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_TASK_FILE_BYTES + 1)  # never more, whatever the file claims to be
    except OSError as e:
        raise UserError(f"cannot read task file ({e.strerror or e.__class__.__name__})", path=path) from None
    if len(blob) > MAX_TASK_FILE_BYTES:
        raise UserError(
            f"task file is larger than {MAX_TASK_FILE_BYTES >> 20} MB",
            path=path,
            fix="keep case lists out of task.yaml (use split.file for split lists); a task file holds settings only",
        )
    try:
        return yaml.load(blob.decode("utf-8"), Loader=_TaskLoader)  # noqa: S506 (a SafeLoader subclass)
    except UnicodeDecodeError:
        raise UserError("task file is not UTF-8 text", path=path, fix="save task.yaml as UTF-8") from None
    except _Refused as e:
        raise UserError(str(e), path=path, fix="write each value out in full (no &anchors, *aliases or << merges)") from None
    except yaml.YAMLError as e:
        raise UserError(f"cannot read task file ({e.__class__.__name__}: {e})", path=path) from None


def parse_task_file(path: Path) -> TaskSpec:
    """The task file as a ``TaskSpec``: YAML, schema and id only, without the protocol, reader and
    metric-name checks of :func:`load_task_file` (those import torch)."""
    raw = read_task_yaml(path)
    if not isinstance(raw, dict):
        raise UserError("task file is not a YAML mapping", path=path)
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UserError(f"invalid task spec at '{where}': {first['msg']}", path=path, fix="correct that key in task.yaml (the fields are TaskSpec's, lvmbench/spec.py)") from None
    if spec.id != path.parent.name:
        raise UserError(f"task id '{spec.id}' differs from its folder name '{path.parent.name}'", path=path)
    spec.folder = path.parent
    return spec


def load_task_file(path: Path) -> TaskSpec:
    spec = parse_task_file(path)
    from lvmbench.data.reader_options import validate_task_readers
    from lvmbench.metric_names import check_metric_names
    from lvmbench.protocols.base import validate_task_settings  # heavy (torch): only once a spec parsed

    validate_task_settings(spec)  # every protocol setting, also in each suite profile, is typed
    validate_task_readers(spec)  # every reader option, also in profiles and OOD sets, is typed
    check_metric_names(spec)
    for suite in spec.profiles:
        check_metric_names(spec.for_suite(suite), f"profiles.{suite}.")
    return spec


def is_builtin(spec: TaskSpec) -> bool:
    """A task shipped in this repository's tasks/ folder (LVM-Med's tasks and their companions)."""
    return spec.folder is not None and spec.folder.resolve().parent == REPO_TASKS.resolve()


def check_out_of_tree(spec: TaskSpec, raw: dict) -> None:
    """A task from outside the repository stays out of ``lvmmed``: one that names no suites is in
    none (run by ``--tasks``), not in LVM-Med's by default; naming ``lvmmed`` is an error."""
    path = spec.folder / "task.yaml" if spec.folder else None
    if "suites" not in raw:
        spec.suites = []
    if "lvmmed" in spec.suites or "lvmmed" in spec.profiles:
        raise UserError(
            f"task '{spec.id}' comes from outside lvmbench and may not join suite 'lvmmed' (LVM-Med's 15 tasks and their family averages)",
            path=path,
            fix="name a suite of your own, e.g. `suites: [my-suite]`, and run it with --suite my-suite",
        )


# task folder name -> (task file, its one-line error), for task files that did not load
BROKEN: dict[str, tuple[Path, UserError]] = {}
# task id -> {"folder": ..., "package": "name version" or None}
ORIGINS: dict[str, dict[str, str | None]] = {}


def _discover(reg: Registry[TaskSpec], load: Callable[[Path], TaskSpec] = load_task_file) -> None:
    BROKEN.clear()
    reg._broken.clear()
    for root, package in _task_roots():
        if not root.is_dir():
            continue
        for yml in sorted(root.glob("*/task.yaml")):
            try:
                spec = load(yml)
                if root.resolve() != REPO_TASKS.resolve():
                    raw = read_task_yaml(yml)
                    check_out_of_tree(spec, raw if isinstance(raw, dict) else {})
                if spec.id in reg._items:
                    raise UserError(f"task '{spec.id}' defined twice (also in {reg._items[spec.id].folder})", path=yml)
            except UserError as e:
                BROKEN[yml.parent.name] = (yml, e)
                reg.add_broken(yml.parent.name, e)
                continue
            reg.add(spec.id, spec)
            ORIGINS[spec.id] = {"folder": str(yml.parent.resolve()), "package": package}


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


def parsed_tasks() -> list[TaskSpec]:
    """Every task that parses (YAML, schema, id), without validating its protocol settings, reader
    options and metric names: what a command that only reads results needs (the leaderboard:
    families, suites, reported rows), without importing torch. The checked tasks when they are
    already loaded in this process; otherwise read afresh on each call (no cache to go stale when
    LVMBENCH_TASK_PATH changes). A task that parses but fails those checks is listed here;
    ``all_tasks`` leaves it out (``lvmbench tasks`` names the error)."""
    if TASKS._loaded:
        return all_tasks()
    reg: Registry[TaskSpec] = Registry("task")
    _discover(reg, parse_task_file)
    return [spec for _, spec in reg.items()]


def tasks_in_suite(suite: str) -> list[TaskSpec]:
    return [t for t in all_tasks() if t.in_suite(suite)]
