"""Resolve a task's data: data root -> reader -> cases -> split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lvmbench.data.cases import READERS, Case, DatasetReader, make_reader
from lvmbench.data.contained import stays_inside
from lvmbench.data.ood import OODData, load_ood
from lvmbench.data.reader_options import options_model
from lvmbench.data.splits import Split, resolve_split
from lvmbench.errors import DataError
from lvmbench.spec import TaskSpec


@dataclass
class TaskData:
    spec: TaskSpec
    root: Path  # the task's dataset folder
    reader: DatasetReader
    cases: list[Case]
    split: Split
    ood: list[OODData] = field(default_factory=list)  # out-of-distribution test sets (task.ood)

    @property
    def data_root(self) -> Path:
        """The data root the dataset folder was resolved against (OOD sets live under it too)."""
        return data_root_of(self.spec, self.root)


def data_root_of(spec: TaskSpec, dataset_folder: Path) -> Path:
    root = dataset_folder
    for _ in Path(spec.data.dir).parts:
        root = root.parent
    return root


def dataset_root(spec: TaskSpec, data_root: Path | None) -> Path:
    """The task's dataset folder; refuses a task whose folders lie outside the data root.

    ``data.location: task_folder`` puts it inside the task's own folder instead (a plugin ships a
    small sample for its smoke profile); the data root is then not needed."""
    if spec.data.location == "task_folder" and spec.folder is not None:
        check_dirs_inside_root(spec)
        return spec.folder / spec.data.dir
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
    cases = limit_cases(reader.cases(), spec.data.limit)
    split = resolve_split(cases, spec.split, spec.id, suite, spec.folder)
    ood = load_ood(spec, data_root_of(spec, root)) if spec.ood else []
    return TaskData(spec=spec, root=root, reader=reader, cases=cases, split=split, ood=ood)


def task_reader(spec: TaskSpec, root: Path) -> DatasetReader:
    """The task's reader on ``root`` with the task's classes filled in (shared with ``data verify``)."""
    options = dict(spec.data.options)
    wants = "classes" in getattr(options_model(READERS.get(spec.data.reader)), "model_fields", {})
    if "classes" not in options and (wants or spec.family in ("detection", "segmentation")):
        # label readers map names onto, and check label ranges against, the task's classes
        options["classes"] = spec.classes
    return make_reader(spec.data.reader, root, options)


def limit_cases(cases: list[Case], limit: int | None) -> list[Case]:
    """``data.limit``: a quick sample of at most ``limit`` cases, taken as whole groups (a patient
    is never cut in two) in group order, classes in turn (the first group of each class, then the
    second ...), so a small sample still holds every class and a grouped split still holds."""
    if limit is None or len(cases) <= limit:
        return cases
    groups: dict[str, list[Case]] = {}
    for c in sorted(cases, key=lambda c: (c.group, c.id)):
        groups.setdefault(c.group, []).append(c)
    by_label: dict[object, list[list[Case]]] = {}
    for members in groups.values():
        by_label.setdefault(members[0].label, []).append(members)
    queues = [by_label[k] for k in sorted(by_label, key=lambda k: (k is None, k if isinstance(k, int) else 0, str(k)))]
    out: list[Case] = []
    for i in range(max(len(q) for q in queues)):
        for q in queues:
            if i < len(q) and len(out) + len(q[i]) <= limit:
                out += q[i]
    return sorted(out, key=lambda c: c.id)
