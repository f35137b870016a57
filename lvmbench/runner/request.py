"""What a run is asked to do and what it reports: ``EvalRequest`` -> ``Planned`` units -> ``Summary``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.protocols.settings import ProtocolSettings
from lvmbench.spec import RunOptions, RunUnit, TaskSpec


@dataclass
class EvalRequest:
    encoder: str
    weights: Path | None = None
    suite: str = "lvmmed"
    tasks: list[str] | None = None
    protocols: list[str] | None = None
    heads: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    fractions: list[float] = field(default_factory=lambda: [1.0])
    data_root: Path | None = None
    results: Path = Path("results")
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    keep_stale: bool = False
    cache_dir: Path | None = None
    run: RunOptions = field(default_factory=RunOptions)
    decoder_weights: Path | None = None  # prompt protocols' --decoder-weights (a setting: in the identity by content)
    units: list[str] | None = None  # only these unit keys (a launcher worker's share of the plan)


@dataclass
class Planned:
    unit: RunUnit
    task: TaskSpec
    settings: ProtocolSettings
    recipe: str = "default"  # "transformer": the task's transformer block was applied


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # recomputed (or kept, with --keep-stale)
    interrupted: bool = False
    below_baseline: list[str] = field(default_factory=list)  # synthetic suites: "unit (metric x <= baseline y)"

    @property
    def ok(self) -> bool:
        return not self.failed


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard '{text}' is not of the form i/n", fix="e.g. --shard 0/4 (shards are numbered from 0)") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= i < n", fix="e.g. --shard 0/4 ... 3/4")
    return i, n
