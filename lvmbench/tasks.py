"""Task discovery: every ``tasks/<id>/task.yaml`` next to the package, extra folders from
``LVMBENCH_TASK_PATH`` (os.pathsep-separated), and the ``lvmbench.tasks`` entry point group
(each entry point resolves to a folder of task folders, or a callable returning one).
"""

from __future__ import annotations

import os
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


def load_task_file(path: Path) -> TaskSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read task file ({e.__class__.__name__}: {e})", path=path) from None
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
