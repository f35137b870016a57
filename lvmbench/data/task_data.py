"""Resolve a task's data: data root -> reader -> cases -> split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvmbench.data.cases import Case, DatasetReader, make_reader
from lvmbench.data.splits import Split, make_split
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
    if data_root is None:
        raise DataError(
            f"task '{spec.id}' needs real data and no data root was given",
            fix=f"pass --data-root DIR (or set LVMBENCH_DATA) where DIR/{spec.data.dir} holds the dataset, or use --suite smoke",
        )
    return Path(data_root) / spec.data.dir


def load_task_data(spec: TaskSpec, data_root: Path | None) -> TaskData:
    root = dataset_root(spec, data_root)
    if not root.is_dir():
        raise DataError(
            f"dataset folder for task '{spec.id}' not found",
            path=root,
            fix=f"download the dataset into {root} (layout: see tasks/{spec.id}/task.yaml) or fix --data-root",
        )
    options = dict(spec.data.options)
    if spec.family == "classification" and "classes" not in options and spec.data.reader == "class_folders":
        options["classes"] = spec.classes
    reader = make_reader(spec.data.reader, root, options)
    cases = reader.cases()
    split = make_split(cases, spec.split, spec.folder)
    return TaskData(spec=spec, root=root, reader=reader, cases=cases, split=split)
