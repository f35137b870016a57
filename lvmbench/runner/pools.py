"""What a run loads once and every unit shares: each task's data (and its fingerprint) and each
seed's encoder."""

from __future__ import annotations

from pathlib import Path

from lvmbench.data.fingerprint import data_fingerprint
from lvmbench.data.task_data import TaskData, load_task_data
from lvmbench.encoders import create_encoder
from lvmbench.encoders.base import Encoder, EncoderIdentity
from lvmbench.encoders.channels import takes_channels
from lvmbench.errors import DataError, UserError
from lvmbench.runner.planner import resolve_data_root
from lvmbench.runner.request import EvalRequest
from lvmbench.spec import TaskSpec


class EncoderPool:
    """One loaded encoder per seed for the whole run; every unit gets a deep copy.

    Building an encoder and reading, hashing and loading its checkpoint cost seconds for a ResNet-50
    or ViT-B file, once per unit before; the copy a protocol trains is fresh either way. The seed
    matters only where the checkpoint leaves parameters at their (seeded) initialisation.
    """

    def __init__(self, name: str, weights: Path | None):
        self.name, self.weights = name, weights
        self._loaded: dict[int | tuple[int, int], tuple[Encoder, EncoderIdentity]] = {}

    def get(self, seed: int, channels: int | None = None) -> tuple[Encoder, EncoderIdentity]:
        # a plugin builder told the task's channel count builds one encoder per channel count
        key = (seed, channels) if channels is not None and takes_channels(self.name) else seed
        if key not in self._loaded:
            self._loaded[key] = create_encoder(self.name, self.weights, seed=seed, in_channels=channels)
        return self._loaded[key]

    def info(self, seed: int) -> dict:
        """What, beyond the weights, decides the encoder's outputs (its pooling): part of identity."""
        return encoder_info(self.get(seed)[0])


def encoder_info(encoder: Encoder) -> dict:
    pooling = getattr(encoder, "pooling", None)
    info = {"pooling": pooling} if pooling is not None else {}
    if getattr(encoder, "pyramid_kind", None):  # a ViT's dense pyramid: results of an older one are stale
        info["pyramid"] = encoder.pyramid_kind  # type: ignore[attr-defined]
    return info


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
