"""Task files: where they are found and how one is read into a ``TaskSpec`` — YAML (bounded, no
aliases), schema and id — without the protocol, reader and metric-name checks that
``lvmbench.tasks`` adds (those import the protocols, and with them torch). A command that only reads
results (the leaderboard) needs no more than :func:`parsed_tasks`.

Task folders: every ``tasks/<id>/task.yaml`` next to the package, extra folders from
``LVMBENCH_TASK_PATH`` (os.pathsep-separated), and the ``lvmbench.tasks`` entry point group (each
entry point resolves to a folder of task folders, or a callable returning one). Tasks from outside
this repository state their own suites and may not join ``lvmmed``. The suites themselves (built in,
described by plugins through ``lvmbench.suites``, named by task files) are listed here too, so
``eval --help`` names them all without importing torch.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import yaml
from pydantic import ValidationError

from lvmbench.errors import UserError
from lvmbench.kit import first_problem
from lvmbench.registry import dist_label, plugin_error
from lvmbench.spec import TaskSpec

REPO_TASKS = Path(__file__).resolve().parents[1] / "tasks"


def task_roots() -> list[Path]:
    return [root for root, _ in _task_roots({})]


def _task_roots(broken: dict[str, tuple[Path, UserError]]) -> list[tuple[Path, str | None]]:
    """(folder of task folders, the plugin package providing it or None); a plugin whose entry
    point does not load is recorded in ``broken``."""
    roots: list[tuple[Path, str | None]] = [(REPO_TASKS, None)]
    for part in os.environ.get("LVMBENCH_TASK_PATH", "").split(os.pathsep):
        if part:
            roots.append((Path(part), None))
    for ep in entry_points(group="lvmbench.tasks"):
        try:
            obj = ep.load()
            roots.append((Path(obj() if callable(obj) else obj), dist_label(ep)))
        except Exception as e:  # noqa: BLE001 - one broken plugin must not hide every task
            broken[f"<plugin {ep.name}>"] = (Path(ep.value), plugin_error(ep, "lvmbench.tasks", e))
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


READ_FIX = "make task.yaml a readable regular file (or remove the folder from LVMBENCH_TASK_PATH)"


def read_task_yaml(path: Path) -> object:
    """The parsed task file; one-line UserError for unreadable, huge, aliased or malformed YAML, and
    for a task.yaml that is not a regular file: a FIFO would block the read for ever (and with it
    `lvmbench tasks`), a device would feed it endless bytes."""
    blob = _read_regular(path)
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
        raise UserError(f"cannot read task file ({e.__class__.__name__}: {e})", path=path, fix="correct the YAML at the line named (indentation, or quote a value holding ': ' or '#')") from None


def _read_regular(path: Path) -> bytes:
    """At most MAX_TASK_FILE_BYTES + 1 bytes of ``path``, refusing anything but a regular file.

    Opened non-blocking (a FIFO's open would otherwise wait for a writer) and checked with fstat on
    the descriptor itself, so a file swapped after a stat cannot slip through."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        with contextlib.suppress(OSError):  # a socket cannot be opened at all: say what it is
            if not stat.S_ISREG(mode := os.stat(path).st_mode):
                raise UserError(f"task file is not a regular file (it is {_kind(mode)})", path=path, fix=READ_FIX) from None
        raise UserError(f"cannot read task file ({e.strerror or e.__class__.__name__})", path=path, fix=READ_FIX) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"task file is not a regular file (it is {_kind(mode)})", path=path, fix=READ_FIX)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_TASK_FILE_BYTES + 1)  # never more, whatever the file claims to be
    except OSError as e:
        raise UserError(f"cannot read task file ({e.strerror or e.__class__.__name__})", path=path, fix=READ_FIX) from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a plain file"


def parse_task_file(path: Path) -> TaskSpec:
    """The task file as a ``TaskSpec``: YAML, schema and id only, without the protocol, reader and
    metric-name checks of :func:`load_task_file` (those import torch)."""
    raw = read_task_yaml(path)
    if not isinstance(raw, dict):
        raise UserError("task file is not a YAML mapping", path=path, fix="write task.yaml as key: value lines (id, title, family, data, split, ...; see tasks/*/task.yaml)")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as e:
        raise spec_error(e, path) from None
    if spec.id != path.parent.name:
        raise UserError(f"task id '{spec.id}' differs from its folder name '{path.parent.name}'", path=path, fix=f"rename the folder to '{spec.id}' or set id: {path.parent.name}")
    spec.folder = path.parent
    return spec


def spec_error(err: ValidationError, path: Path) -> UserError:
    """The first problem of a task file as one line naming its task.yaml key (the nearest valid
    key for a misspelt one) and a fix in task.yaml terms."""
    p = first_problem(err, TaskSpec)
    where = p.key or "(top level)"
    example = "see tasks/*/task.yaml and README's 'Add a task without Python'"
    if p.kind == "unknown":
        parent = where.rpartition(".")[0]
        hint = f"; did you mean '{p.hint}'?" if p.hint else ""
        scope = f" under {parent}" if parent else ""
        return UserError(f"unknown key '{where}' in the task file{hint}", path=path, fix=f"valid keys{scope}: {', '.join(p.valid)} ({example})")
    if p.kind == "missing":
        return UserError(f"the task file lacks '{where}'", path=path, fix=f"add {where}: ... to task.yaml ({example})")
    return UserError(f"bad value of '{where}' in the task file: {p.text}{p.shown}", path=path, fix=f"correct {where} in task.yaml ({example})")


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


@dataclass
class Discovered:
    specs: dict[str, TaskSpec] = field(default_factory=dict)  # task id -> spec
    broken: dict[str, tuple[Path, UserError]] = field(default_factory=dict)  # folder name -> (file, its one-line error)
    origins: dict[str, dict[str, str | None]] = field(default_factory=dict)  # task id -> {"folder", "package"}


def discover(load: Callable[[Path], TaskSpec] = parse_task_file) -> Discovered:
    """Every task folder's file read by ``load``; a file that does not load (or an id defined twice)
    is recorded as broken with its error, never a reason to leave out the others."""
    found = Discovered()
    for root, package in _task_roots(found.broken):
        if not root.is_dir():
            continue
        for yml in sorted(root.glob("*/task.yaml")):
            try:
                spec = load(yml)
                if root.resolve() != REPO_TASKS.resolve():
                    raw = read_task_yaml(yml)
                    check_out_of_tree(spec, raw if isinstance(raw, dict) else {})
                if spec.id in found.specs:
                    raise UserError(f"task '{spec.id}' defined twice (also in {found.specs[spec.id].folder})", path=yml, fix="give one of them another id (and folder name), or take one folder off LVMBENCH_TASK_PATH")
            except UserError as e:
                found.broken[yml.parent.name] = (yml, e)
                continue
            found.specs[spec.id] = spec
            found.origins[spec.id] = {"folder": str(yml.parent.resolve()), "package": package}
    return found


def parsed_tasks() -> list[TaskSpec]:
    """Every task that parses (YAML, schema, id), without validating its protocol settings, reader
    options and metric names: what a command that only reads results needs (the leaderboard:
    families, suites, reported rows), without importing torch. Read afresh on each call (no cache
    to go stale when LVMBENCH_TASK_PATH changes). A task that parses but fails those checks is
    listed here; ``lvmbench.tasks.all_tasks`` leaves it out (``lvmbench tasks`` names the error)."""
    return [spec for _, spec in sorted(discover().specs.items())]


# -- suites: built in, described by plugins, named by task files (light: no torch) ---------------


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


def plugin_suites() -> dict[str, Suite]:
    """Suites plugin packages describe (the ``lvmbench.suites`` entry-point group)."""
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


def declared_suites(specs: list[TaskSpec]) -> dict[str, Suite]:
    """Built-in suites, plugin-described suites, and every other suite one of ``specs`` names."""
    out = dict(SUITES)
    for name, suite in plugin_suites().items():
        out.setdefault(name, suite)
    members: dict[str, list[str]] = {}
    for t in specs:
        for name in {*t.suites, *t.profiles}:
            members.setdefault(name, []).append(t.id)
    for name, ids in sorted(members.items()):
        if name not in out:
            out[name] = Suite(name, f"declared by task(s) {', '.join(sorted(ids))}; real data from --data-root", declared_by="tasks")
    return out
