"""Protocol contract: (task, encoder, seed, label fraction) -> metrics + per-case scores.

Protocols register with ``@PROTOCOLS.register("name")``; a task lists the protocols it runs in its
``task.yaml``. Selection uses the validation split only; the test split is scored once.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvmbench.data.cache import ArrayCache
from lvmbench.data.cases import Case
from lvmbench.data.splits import label_subset
from lvmbench.data.task_data import TaskData
from lvmbench.data.transforms import InputNorm, input_norm
from lvmbench.encoders.base import Encoder, EncoderIdentity, InputSpec
from lvmbench.errors import UserError
from lvmbench.protocols.declared import (  # noqa: F401 (older imports of the settings resolver)
    Declared,
    has_transformer_recipe,
    resolve_settings,
    validate_task_settings,
)
from lvmbench.protocols.settings import ProtocolSettings
from lvmbench.registry import Registry, import_members, load_entry_points
from lvmbench.spec import RunOptions, RunUnit, TaskSpec


@dataclass
class RunContext:
    """Everything a protocol may read about the unit it runs."""

    unit: RunUnit
    task: TaskSpec
    data: TaskData
    encoder_identity: EncoderIdentity  # which encoder and weights (sha256) the unit runs
    make_encoder: Callable[[], Encoder]
    settings: ProtocolSettings  # resolved: defaults and task-dependent values filled
    device: torch.device
    cache_dir: Path
    run: RunOptions = field(default_factory=RunOptions)
    # the unit's result identity (lvmbench.identity): what its result belongs to; resume
    # checkpoints are keyed by it, so a changed spec never resumes an old run
    result_identity: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.unit.seed

    @property
    def progress(self) -> bool:
        return self.run.progress

    @property
    def amp(self) -> bool:
        return self.run.amp

    @property
    def workers(self) -> int:
        """Data-loader worker processes for this unit (:func:`loader_workers`)."""
        return loader_workers(self.run, self.device)

    @property
    def decoded_cache(self) -> ArrayCache:
        return ArrayCache(self.cache_dir / "decoded", enabled=self.run.decoded_cache)

    def input_norm(self, spec: InputSpec) -> InputNorm:
        """How this unit turns uint8 pixels into the encoder's input: the protocol's ``normalize``
        setting, else the task's ``preprocess.intensity`` (``imagenet`` = the encoder's mean/std)."""
        return input_norm(self.settings.normalize, self.task.preprocess.intensity, spec)

    def train_cases(self) -> list[Case]:
        """Training cases after the label-fraction subset (nested, grouped, stratified)."""
        return label_subset(self.data.split.train, self.unit.label_fraction, self.unit.seed)


def loader_workers(run: RunOptions, device: torch.device | str | None) -> int:
    """Data-loader worker processes: ``--workers``, else what the device leaves free.

    On CUDA the main process mostly waits for the GPU, so up to 4 workers decode beside it. On CPU
    the model's intra-op threads already use the cores; a worker only takes cycles from them
    (measured on 2 cores: fine-tuning 17% slower with one worker reading the decoded cache), so
    workers get only the cores beyond ``torch.get_num_threads()``.
    """
    if run.workers is not None:
        return run.workers
    cores = os.cpu_count() or 1
    if device is not None and torch.device(device).type == "cpu":
        return min(4, max(0, cores - torch.get_num_threads()))
    return min(4, max(0, cores - 1))


@dataclass
class ProtocolOutput:
    metrics: dict[str, float]
    per_case: list[dict[str, Any]]
    hparams: dict[str, Any]
    counts: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # a protocol that measures something other than the task's metric (retrieval: recall@1) names
    # its own primary metric; None = the task's ``primary_metric``
    primary_metric: str | None = None


class Protocol(Declared):
    """An implementation: its declaration (name, families, settings, version) comes from the
    ``declared.Declared`` subclass it inherits; this adds ``run``."""

    def run(self, ctx: RunContext) -> ProtocolOutput:
        raise NotImplementedError


def _load(reg: Registry[type[Protocol]]) -> None:
    import_members("lvmbench.protocols", skip=("base",))
    load_entry_points(reg, "lvmbench.protocols", _protocol_class)  # plugin packages


def _protocol_class(name: str, obj: object) -> type[Protocol]:
    if not (isinstance(obj, type) and issubclass(obj, Protocol)):
        raise UserError(f"plugin protocol '{name}' is not a Protocol subclass ({obj!r})", fix="point the lvmbench.protocols entry point at a class deriving from lvmbench.protocols.base.Protocol")
    return obj


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol", _load)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
