"""Resolve a task's data: data root -> reader -> cases -> split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from lvmbench.data.cases import Case, DatasetReader, make_reader
from lvmbench.data.splits import Split, resolve_split
from lvmbench.errors import DataError
from lvmbench.spec import TaskSpec


@dataclass
class TaskData:
    spec: TaskSpec
    root: Path
    reader: DatasetReader
    cases: list[Case]
    split: Split


def dataset_root(spec: TaskSpec, data_root: Path | None) -> Path:
    """The task's dataset folder; refuses a task whose folders lie outside the data root."""
    if data_root is None:
        raise DataError(
            f"task '{spec.id}' needs real data and no data root was given",
            fix=f"pass --data-root DIR (or set LVMBENCH_DATA) where DIR/{spec.data.dir} holds the dataset, or use --suite smoke",
        )
    check_dirs_inside_root(spec)
    return Path(data_root) / spec.data.dir


def check_dirs_inside_root(spec: TaskSpec) -> None:
    """``data.dir`` and every ``ood[].dir`` must name a folder under the data root.

    A task file is shared data: an absolute path or a ``..`` climb would make it read (and cache,
    and report as this task) whatever that path holds on each machine, e.g. ``/etc``. The check is
    lexical, so a symlink the user placed inside the data root is honoured: that is how data kept
    elsewhere is brought in, deliberately, on one machine.
    """
    keys = [("data.dir", spec.data.dir)] + [(f"ood[{i}].dir ({o.name})", o.dir) for i, o in enumerate(spec.ood) if o.dir is not None]
    for key, value in keys:
        if not stays_inside(value):
            where = spec.folder / "task.yaml" if spec.folder else None
            raise DataError(
                f"task '{spec.id}': {key} '{value}' points outside the data root",
                path=where,
                fix=f"make {key} a folder name under the data root; to use data kept elsewhere, link it in: ln -s /path/to/it DATA_ROOT/NAME",
            )


def stays_inside(rel: str) -> bool:
    """True when ``rel``, joined to any folder, stays under that folder (no absolute path, no climb out)."""
    text = rel.replace("\\", "/")  # a task file may be written on Windows; refusing odd names is safe
    if text.startswith("/") or PureWindowsPath(rel).drive:
        return False
    # any '..' counts, even 'a/../b': the OS resolves it after following a symlink 'a', so it may climb out
    return ".." not in PurePosixPath(text).parts


def load_task_data(spec: TaskSpec, data_root: Path | None, suite: str | None = None) -> TaskData:
    """``suite`` selects the user's frozen/imported split file for (suite, task) when one exists."""
    root = dataset_root(spec, data_root)
    if not root.is_dir():
        raise DataError(
            f"dataset folder for task '{spec.id}' not found",
            path=root,
            fix=f"download the dataset into {root} (layout: see tasks/{spec.id}/task.yaml) or fix --data-root",
        )
    reader = task_reader(spec, root)
    cases = reader.cases()
    split = resolve_split(cases, spec.split, spec.id, suite, spec.folder)
    return TaskData(spec=spec, root=root, reader=reader, cases=cases, split=split)


def task_reader(spec: TaskSpec, root: Path) -> DatasetReader:
    """The task's reader on ``root`` with the task's classes filled in (shared with ``data verify``)."""
    options = dict(spec.data.options)
    if spec.family == "classification" and "classes" not in options and spec.data.reader == "class_folders":
        options["classes"] = spec.classes
    if spec.family == "detection" and "classes" not in options:
        options["classes"] = spec.classes  # box readers map publisher names onto the task's classes
    if spec.family == "segmentation" and "classes" not in options:
        options["classes"] = spec.classes  # mask readers check label ranges against the task's classes
    return make_reader(spec.data.reader, root, options)
