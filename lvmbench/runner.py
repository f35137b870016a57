"""Plan units, skip finished ones, run the rest, write one result per unit atomically.

A unit is (suite, task, protocol, head, encoder weights, seed, label fraction). Units are
independent: a failing unit prints one line and the others go on; ``--shard i/n`` takes every n-th
unit of the sorted plan, so shards on several machines fill one results tree without overlap.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lvmbench import __version__
from lvmbench.data.task_data import TaskData, load_task_data
from lvmbench.data.verify import preflight
from lvmbench.encoders import create_encoder, is_known, weights_identity
from lvmbench.encoders.base import Encoder, EncoderIdentity
from lvmbench.encoders import _unknown as unknown_encoder
from lvmbench.errors import DataError, UserError
from lvmbench.paths import cache_root
from lvmbench.protocols.base import PROTOCOLS, ProtocolOutput, RunContext, pick_device
from lvmbench.results import Claim, is_done, result_path, write_result
from lvmbench.runtime import data_fingerprint, runtime_info, set_deterministic
from lvmbench.spec import CaseScore, ResultRecord, RunUnit, TaskSpec
from lvmbench.suites import get_suite, synthetic_root
from lvmbench.tasks import get_task, tasks_in_suite


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
    device: str | None = None
    cache_dir: Path | None = None
    progress: bool = True
    options: dict = field(default_factory=dict)


@dataclass
class Planned:
    unit: RunUnit
    task: TaskSpec


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

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


def select_tasks(req: EvalRequest) -> list[TaskSpec]:
    suite = get_suite(req.suite)
    if req.tasks:
        specs = [get_task(t) for t in req.tasks]
        for s in specs:
            if suite.name != "lvmmed" and not s.in_suite(suite.name):
                raise UserError(f"task '{s.id}' has no '{suite.name}' profile", fix="drop it from --tasks or run it with --suite lvmmed")
    else:
        specs = tasks_in_suite(suite.name)
    return [s.for_suite(suite.name) for s in specs]


def plan(req: EvalRequest, log: Callable[[str], None] = print) -> tuple[list[Planned], list[str]]:
    """All units of the request (before skipping finished ones) and one line per unavailable task."""
    if not is_known(req.encoder):
        raise unknown_encoder(req.encoder)
    sha = weights_identity(req.weights)
    planned: list[Planned] = []
    unavailable: list[str] = []
    for p in req.protocols or []:
        PROTOCOLS.get(p)  # unknown protocol names fail early, with a suggestion
    for task in select_tasks(req):
        protos = [p for p in task.default_protocols or [] if not req.protocols or p in req.protocols]
        if req.protocols:
            protos += [p for p in req.protocols if p in task.protocols and p not in protos]
        for proto in protos:
            if proto not in PROTOCOLS:
                unavailable.append(f"{task.id}: protocol '{proto}' ({task.family}) is not implemented yet; skipped")
                continue
            cls = PROTOCOLS.get(proto)
            heads = task.heads(proto) if cls.uses_head else ["linear"]
            if req.heads and cls.uses_head:
                heads = list(req.heads)
            for head in heads:
                for seed in req.seeds:
                    for frac in req.fractions:
                        unit = RunUnit(
                            suite=req.suite,
                            task_id=task.id,
                            protocol=proto,
                            head=head,
                            encoder=req.encoder,
                            weights_sha256=sha,
                            seed=seed,
                            label_fraction=frac,
                        )
                        planned.append(Planned(unit, task))
    planned.sort(key=lambda p: p.unit.key())
    check_unique(planned)
    if req.shard:
        i, n = req.shard
        planned = planned[i::n]
    return planned, unavailable


def check_unique(planned: list[Planned]) -> None:
    """Two planned units with one result path would run twice and count as two seeds."""
    seen: set[str] = set()
    for p in planned:
        key = p.unit.key()
        if key in seen:
            raise UserError(
                f"the request names unit {key} twice",
                fix="list each seed, label fraction, protocol and head once (e.g. --seeds 0,1 not 0,0; --label-fraction 0.1 not 0.1,0.10)",
            )
        seen.add(key)


@functools.cache
def package_versions() -> dict[str, str]:
    """Once per process: installed versions do not change during a run (and cost ~20 ms a unit)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "lvmbench": __version__}
    # everything that decodes, resizes or scores data can move a metric, not only the model code
    for pkg in ("torch", "torchvision", "timm", "segmentation-models-pytorch", "monai", "numpy", "scipy", "scikit-learn", "pillow", "nibabel", "SimpleITK", "pydicom", "tifffile", "pycocotools", "mmdet", "mmcv"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The checkout's commit (``-dirty`` with local edits), asked of git once per run: two git
    subprocesses per unit cost more than a warm-cache frozen unit."""
    return _git_commit(Path(__file__).resolve().parents[1], _run_id)


_run_id = 0  # bumped by ``run``: a new request asks git again (a long-lived process may see commits)


@functools.lru_cache(maxsize=1)
def _git_commit(repo: Path, run_id: int) -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        sha = res.stdout.strip() if res.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def resolve_data_root(req: EvalRequest) -> Path | None:
    suite = get_suite(req.suite)
    if suite.synthetic:
        from lvmbench.data.synth import ensure_synthetic

        return ensure_synthetic(req.data_root or synthetic_root(req.cache_dir))
    if req.data_root:
        return req.data_root
    if suite.default_data_root and Path(suite.default_data_root).is_dir():
        return Path(suite.default_data_root)
    return None


def build_record(
    unit: RunUnit,
    task: TaskSpec,
    data: TaskData,
    out: ProtocolOutput,
    ident,
    started: str,
    device: torch.device,
    elapsed: float,
    data_root: Path | None,
    runtime: dict | None = None,
) -> ResultRecord:
    primary = out.primary_metric or task.primary_metric
    if primary not in out.metrics:
        raise RuntimeError(f"protocol '{unit.protocol}' did not report the primary metric '{primary}'")
    per_case = [CaseScore.model_validate(r) for r in out.per_case]
    return ResultRecord(
        unit=unit,
        task_version=task.version,
        family=task.family,
        primary_metric=primary,
        primary=float(out.metrics[primary]),
        metrics={k: float(v) for k, v in out.metrics.items()},
        per_case=per_case,
        extra=out.extra,
        hyperparameters=out.hparams,
        counts=out.counts,
        split_hash=data.split.hash(),
        data_root=str(data_root) if data_root else None,
        weights_path=ident.weights_path,
        flags=sorted(set(out.flags) | set(getattr(data.split, "flags", []))),
        timings={**out.timings, "wall_s": elapsed},
        versions=package_versions(),
        git_commit=git_commit(),
        device=device_name(device),
        runtime=runtime or {},
        started_at=started,
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


class EncoderPool:
    """One loaded encoder per seed for the whole run; every unit gets a deep copy.

    Building an encoder and reading, hashing and loading its checkpoint cost seconds for a ResNet-50
    or ViT-B file, once per unit before; the copy a protocol trains is fresh either way. The seed
    matters only where the checkpoint leaves parameters at their (seeded) initialisation.
    """

    def __init__(self, name: str, weights: Path | None):
        self.name, self.weights = name, weights
        self._loaded: dict[int, tuple[Encoder, EncoderIdentity]] = {}

    def get(self, seed: int) -> tuple[Encoder, EncoderIdentity]:
        if seed not in self._loaded:
            self._loaded[seed] = create_encoder(self.name, self.weights, seed=seed)
        return self._loaded[seed]


def run(req: EvalRequest, log: Callable[[str], None] | None = None) -> Summary:
    global _run_id
    _run_id += 1
    log = log or (lambda s: tqdm.write(s, file=sys.stderr))
    summary = Summary()
    planned, summary.unavailable = plan(req)
    for line in summary.unavailable:
        log(f"skip  {line}")
    todo: list[Planned] = []
    for p in planned:
        if not req.overwrite and is_done(req.results, p.unit):
            summary.skipped.append(p.unit.key())
            tidy_claim(result_path(req.results, p.unit))
        else:
            todo.append(p)
            path = result_path(req.results, p.unit)
            if not req.overwrite and path.is_file():
                log(f"redo  {p.unit.key()}: its result file is unreadable and is recomputed")
    if summary.skipped:
        log(f"skip  {len(summary.skipped)} unit(s) already have results (use --overwrite to redo)")
    if not todo:
        return summary
    encoders = EncoderPool(req.encoder, req.weights)
    if req.weights is not None:
        encoders.get(todo[0].unit.seed)  # a bad checkpoint fails here, once, before any unit
    data_root = resolve_data_root(req)
    device = pick_device(req.device)
    cache_dir = req.cache_dir or cache_root()
    set_deterministic(bool(req.options.get("deterministic", False)))
    synthetic = get_suite(req.suite).synthetic
    task_data: dict[str, TaskData | UserError] = {}
    fingerprints: dict[str, str] = {}
    for p in tqdm(todo, desc="units", disable=not req.progress, file=sys.stderr):
        key = p.unit.key()
        if p.task.id not in task_data:
            try:
                loaded = load_task_data(p.task, data_root, suite=req.suite)
                check_labels(p.task, loaded)
                preflight(loaded, cache_dir, log, progress=req.progress)  # the checks of `lvmbench data verify`
                task_data[p.task.id] = loaded
                fingerprints[p.task.id] = data_fingerprint(loaded)
            except UserError as e:
                task_data[p.task.id] = e
        data = task_data[p.task.id]
        if isinstance(data, UserError):
            summary.failed.append(key)
            log(f"FAIL  {key}: {data}")
            continue
        claim = Claim(result_path(req.results, p.unit))
        if not claim.acquire():
            summary.busy.append(key)
            log(f"busy  {key}: another lvmbench process is running this unit")
            continue
        try:
            if not req.overwrite and is_done(req.results, p.unit):  # finished by another process meanwhile
                summary.skipped.append(key)
                continue
            runtime = runtime_info(device, req.options, p.task, data, fingerprints[p.task.id], synthetic, p.unit)
            record = run_unit(p, data, req, device, cache_dir, data_root, runtime, encoders)
            write_result(req.results, record)
            summary.done.append(key)
            log(f"done  {key}  {record.primary_metric}={record.primary:.4f}  ({record.timings['wall_s']:.1f}s)")
        except UserError as e:
            summary.failed.append(key)
            log(f"FAIL  {key}: {user_message(e)}")
        except Exception as e:  # a bug, not bad input: keep the traceback, go on with other units
            summary.failed.append(key)
            log(f"ERROR {key}: {e.__class__.__name__}: {e}\n{traceback.format_exc()}")
        finally:
            claim.release()
    return summary


def tidy_claim(path: Path) -> None:
    """Remove the lock file a killed process left next to a finished result (nobody holds it)."""
    claim = Claim(path)
    if claim.lock.exists():
        try:
            if claim.acquire():
                claim.release()
        except UserError:
            pass  # a read-only results tree: the leftover lock is harmless


def user_message(e: UserError) -> str:
    """The one-line message of a user error, also when a DataLoader worker raised it: torch then
    re-raises the same type with the worker's whole traceback as its message, and the original
    message is what follows the traceback's last line's ``module.Class: ``."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    marker = f"{type(e).__module__}.{type(e).__qualname__}: "
    at = text.rfind(marker)
    return text[at + len(marker):].strip() if at >= 0 else text.rsplit(": ", 1)[-1].strip()


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


def run_unit(
    p: Planned,
    data: TaskData,
    req: EvalRequest,
    device: torch.device,
    cache_dir: Path,
    data_root: Path | None,
    runtime: dict | None = None,
    encoders: EncoderPool | None = None,
) -> ResultRecord:
    unit, task = p.unit, p.task
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    # Loaded once per run and seed (validates the checkpoint before any work); protocols get copies.
    encoder, ident = (encoders or EncoderPool(req.encoder, req.weights)).get(unit.seed)

    ctx = RunContext(
        unit=unit,
        task=task,
        data=data,
        identity=ident,
        make_encoder=lambda: copy.deepcopy(encoder),
        hparams=task.hparams(unit.protocol),
        device=device,
        cache_dir=cache_dir,
        progress=req.progress,
        options=req.options,
    )
    out = PROTOCOLS.get(unit.protocol)().run(ctx)
    return build_record(unit, task, data, out, ident, started, device, time.perf_counter() - t0, data_root, runtime)
