"""Task discovery: every ``tasks/<id>/task.yaml`` next to the package, extra folders from
``LVMBENCH_TASK_PATH`` (os.pathsep-separated), and the ``lvmbench.tasks`` entry point group
(each entry point resolves to a folder of task folders, or a callable returning one).
"""

from __future__ import annotations

import os
import re
from importlib.metadata import entry_points
from pathlib import Path

import yaml
from pydantic import ValidationError

from lvmbench.errors import UserError
from lvmbench.registry import Registry
from lvmbench.spec import TaskSpec

REPO_TASKS = Path(__file__).resolve().parents[1] / "tasks"


def task_roots() -> list[Path]:
    roots = [REPO_TASKS]
    for part in os.environ.get("LVMBENCH_TASK_PATH", "").split(os.pathsep):
        if part:
            roots.append(Path(part))
    for ep in entry_points(group="lvmbench.tasks"):
        obj = ep.load()
        roots.append(Path(obj() if callable(obj) else obj))
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


def load_task_file(path: Path) -> TaskSpec:
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
    from lvmbench.protocols.base import validate_task_settings  # heavy (torch): only once a spec parsed

    validate_task_settings(spec)  # every protocol setting, also in each suite profile, is typed
    return spec


def _discover(reg: Registry[TaskSpec]) -> None:
    for root in task_roots():
        if not root.is_dir():
            continue
        for yml in sorted(root.glob("*/task.yaml")):
            spec = load_task_file(yml)
            if spec.id in reg._items:
                raise UserError(f"task '{spec.id}' defined twice (also in {reg._items[spec.id].folder})", path=yml)
            reg.add(spec.id, spec)


TASKS: Registry[TaskSpec] = Registry("task", _discover)


def get_task(name: str) -> TaskSpec:
    return TASKS.get(name)


def all_tasks() -> list[TaskSpec]:
    return [spec for _, spec in TASKS.items()]


def tasks_in_suite(suite: str) -> list[TaskSpec]:
    return [t for t in all_tasks() if t.in_suite(suite)]
