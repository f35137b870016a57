"""Protocol contract: (task, encoder, seed, label fraction) -> metrics + per-case scores.

Protocols register with ``@PROTOCOLS.register("name")``; a task lists the protocols it runs in its
``task.yaml``. Selection uses the validation split only; the test split is scored once.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lvmbench.data.cache import ArrayCache
from lvmbench.data.cases import Case
from lvmbench.data.splits import label_subset
from lvmbench.data.task_data import TaskData
from lvmbench.encoders.base import Encoder, EncoderIdentity
from lvmbench.registry import Registry
from lvmbench.spec import RunUnit, TaskSpec


@dataclass
class RunContext:
    unit: RunUnit
    task: TaskSpec
    data: TaskData
    identity: EncoderIdentity
    make_encoder: Callable[[], Encoder]
    hparams: dict[str, Any]
    device: torch.device
    cache_dir: Path
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.unit.seed

    @property
    def decoded_cache(self) -> ArrayCache:
        return ArrayCache(self.cache_dir / "decoded", enabled=self.options.get("decoded_cache", True))

    def train_cases(self) -> list[Case]:
        """Training cases after the label-fraction subset (nested, grouped, stratified)."""
        return label_subset(self.data.split.train, self.unit.label_fraction, self.unit.seed)


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


class Protocol:
    name: ClassVar[str]
    families: ClassVar[tuple[str, ...]]
    uses_head: ClassVar[bool] = False

    def run(self, ctx: RunContext) -> ProtocolOutput:
        raise NotImplementedError


def _load(reg: Registry[type[Protocol]]) -> None:
    import lvmbench.protocols as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "base":
            importlib.import_module(f"{pkg.__name__}.{mod.name}")


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
