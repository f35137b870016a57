"""The ``data`` column of ``lvmbench tasks``: is the task's dataset there, and how many cases does its
reader list (no decoding: that is ``lvmbench data verify``)."""

from __future__ import annotations

from pathlib import Path

from lvmbench.data.cases import issue_from
from lvmbench.data.splits import frozen_split_path
from lvmbench.data.task_data import dataset_root, limit_cases, task_reader
from lvmbench.errors import UserError
from lvmbench.spec import TaskSpec


def data_status(spec: TaskSpec, root: Path | None, suite: str | None) -> str:
    """Cheap: folder present and the reader lists its cases (no decoding; that is `data verify`)."""
    if root is None and spec.data.location != "task_folder":  # a sample in the task folder needs no root
        return "no --data-root"
    try:
        folder = dataset_root(spec, root)  # raises for a task whose data.dir leaves the root
        if not folder.is_dir():
            return f"missing {spec.data.dir}/"
        n = len(limit_cases(task_reader(spec, folder).cases(), spec.data.limit))
    except UserError as e:
        problem = issue_from(e, spec.data.dir).problem
        return f"error: {problem[:60]}{'...' if len(problem) > 60 else ''} (see `lvmbench data verify {spec.id}`)"
    status = f"ready ({n} cases)"
    if suite and frozen_split_path(spec.id, suite).is_file():
        status += ", split file"
    return status
