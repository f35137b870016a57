"""Typed specs that flow through the harness: TaskSpec -> RunUnit -> ResultRecord.

A task is data (``tasks/<id>/task.yaml``); these models validate it and give every other module one
shape to rely on. Unknown keys are errors so a typo in a YAML file is caught by the tests.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION = 2  # 2: results carry their identity (lvmbench/identity.py)

Family = Literal["classification", "segmentation", "detection"]
Dims = Literal["2d", "3d-slicewise"]


# (task, protocol) -> resolved settings; set by lvmbench.protocols.base when the protocols load
_SETTINGS_RESOLVER: Callable[["TaskSpec", str], Any] | None = None


def register_settings_resolver(resolver: Callable[["TaskSpec", str], Any]) -> None:
    """Called by the protocol layer: how a task's ``protocols.<name>`` settings are validated."""
    global _SETTINGS_RESOLVER
    _SETTINGS_RESOLVER = resolver


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DataSpec(_Strict):
    """Where the publisher's files are and which reader understands them."""

    reader: str
    dir: str = Field(description="folder under the data root holding the publisher's layout")
    options: dict[str, Any] = Field(default_factory=dict)
    expected: dict[str, int] = Field(
        default_factory=dict, description="expected counts, e.g. {'cases': 1000}; checked by verify"
    )
    source_url: str | None = None
    licence: str | None = None
    location: Literal["data_root", "task_folder"] = Field(
        "data_root", description="where dir is: under the data root, or inside the task's own folder (a small sample a plugin ships)"
    )
    limit: int | None = Field(None, gt=0, description="keep at most N cases, whole groups in order, classes taken in turn: a quick sample")

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # keys added later are left out at their defaults, so the spec hash of every existing
        # result (lvmbench/identity.py) stays what it was
        out = handler(self)
        for key, default in (("location", "data_root"), ("limit", None)):
            if out.get(key, default) == default:
                out.pop(key, None)
        return out


class SplitSpec(_Strict):
    """How cases are assigned to train/val/test.

    - ``rule``: grouped (patient/volume) split of all cases, stratified by class where possible,
      fractions ``val``/``test``, fixed ``seed``.
    - ``publisher``: the publisher's own partition (``case.meta['split']``) mapped through ``map``;
      a validation split is carved out of train with ``val`` and ``seed`` when the map has none.
    - ``file``: case ids listed in a JSON file (``{"train": [...], "val": [...], "test": [...]}``),
      path relative to the task folder or absolute; written by ``lvmbench data split`` or imported.
    """

    source: Literal["rule", "publisher", "file"] = "rule"
    val: float = 0.2
    test: float = 0.2
    seed: int = 0
    stratify: bool = True
    map: dict[str, str] = Field(default_factory=dict)
    file: str | None = None
    group_by: str = Field("patient", description="what a group is: case (every case its own) | patient | volume | site | any name the reader's group source declares (data.options.group: sequence, lesion, eye, ...)")
    note: str | None = None

    @field_validator("group_by")
    @classmethod
    def _group_word(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            raise ValueError(f"'{v}' is not a group name: write a lower-case word such as patient, sequence or lesion")
        return v

    @model_validator(mode="after")
    def _check(self) -> "SplitSpec":
        if not 0 <= self.val < 1 or not 0 <= self.test < 1 or self.val + self.test >= 1:
            raise ValueError("split fractions must satisfy 0 <= val, test and val + test < 1")
        if self.source == "file" and not self.file:
            raise ValueError("split source 'file' needs 'file'")
        if self.source == "publisher" and not self.map:
            raise ValueError("split source 'publisher' needs 'map' (publisher split -> train/val/test)")
        return self


class PreprocessSpec(_Strict):
    size: int = Field(224, description="square side the image is resized to")
    channels: Literal[1, 3] = 3
    intensity: Literal["imagenet", "raw255", "unit"] = "imagenet"
    resize: Literal["bilinear", "nearest"] = "bilinear"


class OODSet(_Strict):
    """An extra test set scored with the model trained on the task's own training split."""

    name: str
    reader: str | None = None
    dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    sites: list[str] = Field(default_factory=list)


class ReportedValue(_Strict):
    """One published number with its spread, in the row's ``unit``."""

    value: float
    std: float | None = None


class ReportedRow(_Strict):
    """Published numbers of one encoder and protocol, shown on the leaderboard marked 'reported' in
    the task's ``reported_suite`` only (the suite whose budget they were measured under).

    Either one number (``value``, ``std``, ``metric`` = default the task's primary metric) or several
    from one source (``metrics: {auc: 0.901, accuracy: {value: 0.863, std: 0.01}}``); each may be any
    metric the task reports and shows beside results of that metric. ``unit`` says how the numbers
    are written: ``percent`` (76.8, the LVM-Med tables) or ``fraction`` (0.768); ``values()`` gives
    them x100 either way. ``conventions`` (``prompt_preset``, ``empty_policy``, ``metric_definition``,
    ...) states how the source measured them: a result sits in the same column only when its own
    ``extra.conventions`` agree on every key stated here.
    """

    encoder: str
    protocol: str
    head: str = "linear"
    value: float | None = None
    std: float | None = None
    metric: str | None = None
    metrics: dict[str, float | ReportedValue] = Field(default_factory=dict)
    unit: Literal["percent", "fraction"] = "percent"
    source: str
    conventions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _in_range(self) -> "ReportedRow":
        if (self.value is None) == (not self.metrics):
            raise ValueError("a reported row states either value (with metric, std) or metrics: {name: value, ...}, not both or neither")
        if self.metrics and (self.metric is not None or self.std is not None):
            raise ValueError("with metrics: {name: value}, give each metric's std inside it ({name: {value: v, std: s}}), not metric/std beside it")
        if self.unit == "fraction":
            for name, v in self._raw():
                if not -1.0 <= v.value <= 1.0 and not (name or "").startswith("hd95"):
                    raise ValueError(f"reported value {v.value} is not a fraction; write unit: percent for 0-100 numbers")
        return self

    def _raw(self) -> list[tuple[str | None, ReportedValue]]:
        if self.value is not None:
            return [(self.metric, ReportedValue(value=self.value, std=self.std))]
        return [(k, v if isinstance(v, ReportedValue) else ReportedValue(value=v)) for k, v in self.metrics.items()]

    def values(self, primary_metric: str) -> list[tuple[str, float, float | None]]:
        """``(metric, value x100, std x100)`` for each number of the row (``metric`` defaults to
        ``primary_metric``)."""
        scale = 100.0 if self.unit == "fraction" else 1.0
        return [(m or primary_metric, v.value * scale, None if v.std is None else v.std * scale) for m, v in self._raw()]

    def stated_metrics(self) -> list[str]:
        """The metric names the row states (none: one number in the task's primary metric)."""
        return [m for m, _ in self._raw() if m is not None]

    @property
    def percent_value(self) -> float:
        """The single ``value`` x100 (rows written with ``metrics:`` use ``values()``)."""
        assert self.value is not None, "a row with metrics: has several values; use values()"
        return self.value * 100.0 if self.unit == "fraction" else self.value

    @property
    def percent_std(self) -> float | None:
        if self.std is None:
            return None
        return self.std * 100.0 if self.unit == "fraction" else self.std


class TaskSpec(_Strict):
    id: str
    version: int = 1
    title: str
    family: Family
    dims: Dims = "2d"
    modality: str
    classes: list[str]
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    protocols: dict[str, dict[str, Any]] = Field(
        description="protocol name -> hyperparameters (paper values); 'heads' lists the heads to run"
    )
    default_protocols: list[str] | None = None
    primary_metric: str
    metrics: list[str] = Field(default_factory=list)
    ood: list[OODSet] = Field(default_factory=list)
    reported: list[ReportedRow] = Field(default_factory=list)
    # the suite whose budget the reported numbers were measured under: they show there only (default:
    # the first of ``suites`` without a profile, i.e. run at this file's own settings; lvmmed for LVM-Med's)
    reported_suite: str | None = None
    suites: list[str] = Field(default_factory=lambda: ["lvmmed"])
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="suite name -> overrides deep-merged into this spec"
    )
    notes: list[str] = Field(default_factory=list)
    folder: Path | None = Field(default=None, exclude=True)

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not v.replace("_", "").isalnum() or v != v.lower():
            raise ValueError(f"task id '{v}' must be lower-case letters, digits and '_'")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> "TaskSpec":
        if not self.protocols:
            raise ValueError("a task needs at least one protocol")
        if self.default_protocols is None:
            self.default_protocols = list(self.protocols)
        missing = [p for p in self.default_protocols if p not in self.protocols]
        if missing:
            raise ValueError(f"default_protocols {missing} not in protocols")
        if self.primary_metric not in self.metrics:
            self.metrics = [self.primary_metric, *self.metrics]
        for name, override in self.profiles.items():
            if isinstance(override, dict) and "reported_suite" in override:
                raise ValueError(f"profiles.{name}.reported_suite: the suite of the reported rows is declared once per task, at the top level")
        if self.reported_suite is not None and not self.in_suite(self.reported_suite):
            raise ValueError(f"reported_suite '{self.reported_suite}' is not one of the task's suites or profiles ({', '.join([*self.suites, *self.profiles]) or 'none'})")
        return self

    def reported_in(self) -> str | None:
        """The suite the reported rows show in: ``reported_suite``, else the first of ``suites`` that
        runs the task at this file's own settings (no profile of its own), else none."""
        if self.reported_suite is not None:
            return self.reported_suite
        return next((s for s in self.suites if s not in self.profiles), None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def settings(self, protocol: str) -> Any:
        """The protocol's typed settings, validated and resolved for this task, through the resolver
        the protocols register (:func:`lvmbench.protocols.base.resolve_settings`): the spec sits
        below the protocols and never imports one."""
        if _SETTINGS_RESOLVER is None:
            raise RuntimeError("no protocol settings are registered: import lvmbench.protocols.base first")
        return _SETTINGS_RESOLVER(self, protocol)

    def heads(self, protocol: str) -> list[str]:
        return list(getattr(self.settings(protocol), "heads", ["linear"]))

    def in_suite(self, suite: str) -> bool:
        return suite in self.suites or suite in self.profiles

    def for_suite(self, suite: str) -> "TaskSpec":
        """This spec with the suite's profile overrides applied (a new object)."""
        override = self.profiles.get(suite)
        if not override:
            return self
        base = self.model_dump(exclude={"folder"})
        merged = deep_merge(base, override)
        merged["profiles"] = {}
        merged["reported_suite"] = None  # the rows belong to the task (reported_in), not to a suite's copy
        spec = TaskSpec.model_validate(merged)
        spec.folder = self.folder
        return spec


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class RunUnit(_Strict):
    """One independent piece of work; its result is one JSON file."""

    suite: str
    task_id: str
    protocol: str
    head: str = "linear"
    encoder: str
    weights_sha256: str
    seed: int = 0
    label_fraction: float = 1.0

    @property
    def protocol_tag(self) -> str:
        return self.protocol if self.head == "linear" else f"{self.protocol}-{self.head}"

    def relpath(self) -> Path:
        frac = "" if self.label_fraction == 1.0 else f"-f{self.label_fraction:g}"
        enc = self.encoder.replace("/", "__")
        return (
            Path(self.suite)
            / enc
            / self.weights_sha256[:12]
            / self.task_id
            / f"{self.protocol_tag}-s{self.seed}{frac}.json"
        )

    def key(self) -> str:
        return self.relpath().as_posix()


class RunOptions(BaseModel):
    """How a run executes: the command line's ``--device --amp --compile --deterministic --workers
    --threads --no-progress`` and the launcher's bookkeeping, typed (``RunContext.run``).

    Only ``amp`` changes what is computed (bf16 autocast on CUDA), so only it joins a result's
    identity (:meth:`identity`, absent when off so results of runs without it stay current). The
    others change speed, kernel choice or floating-point reduction order; they are recorded in the
    result's ``runtime`` (and a unit's numbers stay those of one machine, tests/test_determinism.py).
    Data-loader workers only decode: every random draw (batch order, crops, flips) is made in the
    main process from the unit's seed, so they cannot move a number.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str | None = Field(None, description="cpu, cuda, cuda:N (default: cuda when available)")
    amp: bool = Field(False, description="bf16 autocast on CUDA")
    compile: bool = Field(False, description="torch.compile the trained models")
    deterministic: bool = Field(False, description="deterministic torch kernels (GPU)")
    workers: int | None = Field(None, ge=0, le=64, description="data-loader worker processes (default: what the device leaves free)")
    threads: int | None = Field(None, ge=1, le=1024, description="torch intra-op threads (default: torch's)")
    progress: bool = Field(True, description="progress bars")
    feature_cache: bool = Field(True, description="keep extracted features on disk")
    decoded_cache: bool = Field(True, description="keep decoded, resized arrays on disk")
    launcher: dict[str, Any] | None = Field(None, description="which launcher worker ran the unit (recorded, lvmbench.launch)")

    def identity(self) -> dict[str, Any]:
        """The options that change what a unit computes (part of its result identity)."""
        return {"amp": True} if self.amp else {}


class CaseScore(_Strict):
    """Per-case result, kept for bootstrap CIs and paired comparisons."""

    model_config = ConfigDict(extra="allow")
    case: str
    group: str
    split: str = "test"
    score: float | None = None


class ResultRecord(_Strict):
    # keys a user added by hand are kept (and written back), never a reason to call the file corrupt
    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION
    unit: RunUnit
    task_version: int
    family: Family
    primary_metric: str
    primary: float
    metrics: dict[str, float | None]  # None: undefined on this split (e.g. AUC with one class)
    per_case: list[CaseScore] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    split_hash: str
    # what the numbers belong to: split, task spec with resolved settings, evaluation code, data,
    # training subset (lvmbench/identity.py); a result whose identity differs from a rerun's is stale
    identity: dict[str, str] = Field(default_factory=dict)
    data_root: str | None = None
    weights_path: str | None = None
    flags: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    # where the task came from: its folder, the plugin package providing it, every lvmbench plugin installed
    origin: dict[str, Any] = Field(default_factory=dict)
    git_commit: str | None = None
    device: str
    # what else can move a metric on one machine: threads, determinism flags, data/cache versions
    runtime: dict[str, Any] = Field(default_factory=dict)
    started_at: str
    finished_at: str
