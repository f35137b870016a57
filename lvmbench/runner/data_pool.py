"""Each task's data, loaded once per run: its split and fingerprint name every result of it."""

from __future__ import annotations

from pathlib import Path

from lvmbench.data.fingerprint import data_fingerprint
from lvmbench.data.task_data import TaskData, load_task_data
from lvmbench.errors import DataError, UserError
from lvmbench.runner.planner import resolve_data_root
from lvmbench.runner.request import EvalRequest
from lvmbench.spec import TaskSpec


class TaskDataPool:
    """Each task's data loaded once per run (its split and fingerprint name every result of it);
    a task whose data cannot be loaded keeps its one-line error for every unit of it."""

    def __init__(self, req: EvalRequest):
        self.req = req
        self._root: Path | None = None
        self._root_ready = False
        self.data: dict[str, TaskData | UserError] = {}
        self.fingerprints: dict[str, str] = {}

    def root(self) -> Path | None:
        if not self._root_ready:
            self._root, self._root_ready = resolve_data_root(self.req), True
        return self._root

    def get(self, task: TaskSpec) -> TaskData | UserError:
        if task.id not in self.data:
            root = self.root()  # a bad data root is the whole command's error, not a task's
            try:
                loaded = load_task_data(task, root, suite=self.req.suite)
                check_labels(task, loaded)
                self.data[task.id] = loaded
                self.fingerprints[task.id] = data_fingerprint(loaded)
            except UserError as e:
                self.data[task.id] = e
        return self.data[task.id]


def check_labels(task: TaskSpec, data: TaskData) -> None:
    """Class labels outside the task's classes would crash a loss or silently skew a metric."""
    if task.family != "classification":
        return
    k = task.num_classes
    for c in data.cases:
        if c.label is not None and not 0 <= int(c.label) < k:
            raise DataError(
                f"case '{c.id}' has label {c.label}, outside the task's {k} classes (0..{k - 1})",
                path=data.root / c.image,
                fix="correct the label in the dataset's label file, or the task's classes",
            )
