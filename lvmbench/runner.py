"""Plan units, skip finished ones, run the rest, write one result per unit atomically.

A unit is (suite, task, protocol, head, encoder weights, seed, label fraction). Units are
independent: a failing unit prints one line and the others go on; ``--shard i/n`` takes every n-th
unit of the sorted plan, so shards on several machines fill one results tree without overlap.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import math
import os
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
from lvmbench.encoders.channels import check_channels, takes_channels
from lvmbench.encoders import _unknown as unknown_encoder
from lvmbench.errors import DataError, UserError
from lvmbench.failures import clear_failure, note_failure
from lvmbench.paths import usable_cache_dir
from lvmbench import interrupt
from lvmbench.heads import HEADS
from lvmbench.identity import differences, unit_identity
from lvmbench.encoders.kinds import encoder_kind
from lvmbench.protocols.base import PROTOCOLS, ProtocolOutput, RunContext, has_transformer_recipe, pick_device, resolve_settings
from lvmbench.protocols.settings import ProtocolSettings
from lvmbench.results import Claim, read_result, result_path, write_result
from lvmbench.runtime import data_fingerprint, runtime_info, set_deterministic, train_subset_hash
from lvmbench.spec import CaseScore, ResultRecord, RunUnit, TaskSpec
from lvmbench.suites import check_membership, get_suite
from lvmbench.tasks import get_task, task_origin, tasks_in_suite
from lvmbench.registry import plugin_packages


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
    device: str | None = None
    cache_dir: Path | None = None
    progress: bool = True
    options: dict = field(default_factory=dict)
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


def select_tasks(req: EvalRequest) -> list[TaskSpec]:
    suite = get_suite(req.suite)
    if req.tasks:
        specs = [get_task(t) for t in req.tasks]
        for s in specs:
            if suite.name != "lvmmed" and not s.in_suite(suite.name):
                raise UserError(f"task '{s.id}' has no '{suite.name}' profile", fix="drop it from --tasks or run it with --suite lvmmed")
            check_membership(s, suite.name)  # an out-of-tree task stays in its own suites
    else:
        specs = tasks_in_suite(suite.name)
    return [s.for_suite(suite.name) for s in specs]


def plan(req: EvalRequest, log: Callable[[str], None] = print) -> tuple[list[Planned], list[str]]:
    """All units of the request (before skipping finished ones) and one line per unavailable task."""
    if not is_known(req.encoder):
        raise unknown_encoder(req.encoder)
    sha = weights_identity(req.weights)
    kind = encoder_kind(req.encoder)
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
            settings = resolve_settings(task, proto, kind=kind)
            recipe = "transformer" if kind == "transformer" and has_transformer_recipe(task, proto) else "default"
            if hasattr(cls, "plan_settings"):  # CLI options that belong to the settings (--decoder-weights)
                settings = cls.plan_settings(settings, req.options)
            heads = list(getattr(settings, "heads", ["linear"])) if cls.uses_head else ["linear"]
            if req.heads and cls.uses_head:
                for h in req.heads:
                    HEADS.get(h)  # an unknown head fails here, with a suggestion
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
                        planned.append(Planned(unit, task, settings, recipe))
    planned.sort(key=lambda p: p.unit.key())
    check_unique(planned)
    if req.units is not None:
        wanted = set(req.units)
        planned = [p for p in planned if p.unit.key() in wanted]
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
    for pkg in ("torch", "torchvision", "timm", "segmentation-models-pytorch", "monai", "numpy", "scipy", "scikit-learn", "pillow", "nibabel", "pydicom", "pycocotools", "mmdet", "mmcv"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    out.update(plugin_packages())  # installed packages that plug readers, encoders, tasks ... in
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


def resolve_data_root(req: EvalRequest, log: Callable[[str], None] | None = None) -> Path | None:
    """``req.data_root`` is ``--data-root`` as given; LVMBENCH_DATA applies to real-data suites only."""
    from lvmbench.paths import data_root as explicit_or_env

    suite = get_suite(req.suite)
    if suite.synthetic:
        from lvmbench.data.synth import synthetic_suite_root

        return synthetic_suite_root(req.data_root, req.cache_dir, log=log or (lambda s: print(s, file=sys.stderr)))
    explicit = explicit_or_env(req.data_root)
    if explicit:
        return explicit
    if suite.default_data_root and Path(suite.default_data_root).is_dir():
        return Path(suite.default_data_root)
    return None


def build_record(
    p: Planned,
    data: TaskData,
    out: ProtocolOutput,
    ident: EncoderIdentity,
    identity: dict[str, str],
    started: str,
    device: torch.device,
    elapsed: float,
    data_root: Path | None,
    runtime: dict | None = None,
) -> ResultRecord:
    unit, task = p.unit, p.task
    primary = out.primary_metric or task.primary_metric
    if primary not in out.metrics:
        raise RuntimeError(f"protocol '{unit.protocol}' did not report the primary metric '{primary}'")
    value = float(out.metrics[primary])
    if not math.isfinite(value):
        raise UserError(
            f"the primary metric '{primary}' is undefined ({value}) on this test split; nothing written",
            fix="check the test split with `lvmbench data verify` (e.g. a class missing from it, or no valid queries)",
        )
    per_case = [CaseScore.model_validate(r) for r in out.per_case]
    return ResultRecord(
        unit=unit,
        task_version=task.version,
        family=task.family,
        primary_metric=primary,
        primary=value,
        # an undefined secondary metric (AUC of a one-class split) is recorded as null, not NaN
        metrics={k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in out.metrics.items()},
        per_case=per_case,
        extra=out.extra,
        # the resolved settings (defaults included), then what the protocol chose while running
        hyperparameters={**p.settings.model_dump(mode="json"), **({"recipe": p.recipe} if p.recipe != "default" else {}), **out.hparams},
        counts=out.counts,
        split_hash=data.split.hash(),
        identity=identity,
        data_root=str(data_root) if data_root else None,
        weights_path=ident.weights_path,
        flags=sorted(set(out.flags) | set(getattr(data.split, "flags", []))),
        timings={**out.timings, "wall_s": elapsed},
        versions=package_versions(),
        origin={**task_origin(task), "plugins": plugin_packages()},
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


def current_identity(p: Planned, data: TaskData, fingerprint: str, encoder: dict | None = None) -> dict[str, str]:
    return unit_identity(
        p.task, p.unit, p.settings, PROTOCOLS.get(p.unit.protocol).version, data.split.hash(), fingerprint, train_subset_hash(data, p.unit), encoder
    )


def triage(req: EvalRequest, planned: list[Planned], pool: TaskDataPool, encoders: "EncoderPool", summary: Summary, log: Callable[[str], None]) -> list[Planned]:
    """Finished units whose identity still holds are skipped; stale ones are recomputed (or kept
    with ``--keep-stale``); unreadable ones are recomputed. Returns the units to run."""
    todo: list[Planned] = []
    for p in planned:
        path = result_path(req.results, p.unit)
        if req.overwrite or not path.is_file():
            todo.append(p)
            continue
        try:
            old = read_result(path)
        except UserError as e:
            log(f"redo  {p.unit.key()}: {user_message(e)}; recomputed (the old file is kept as {aside_name(path)})")
            todo.append(p)
            continue
        data = pool.get(p.task)
        if isinstance(data, UserError):
            todo.append(p)  # fails with the data's own message when its turn comes
            continue
        changed = differences(old.identity, current_identity(p, data, pool.fingerprints[p.task.id], encoders.info(p.unit.seed)))
        if not changed:
            summary.skipped.append(p.unit.key())
            tidy_claim(path)
            continue
        summary.stale.append(p.unit.key())
        if req.keep_stale:
            log(f"stale {p.unit.key()}: {', '.join(changed)} changed since it ran; kept (--keep-stale)")
            continue
        log(f"stale {p.unit.key()}: {', '.join(changed)} changed since it ran; recomputed (the old file is kept as {aside_name(path)})")
        todo.append(p)
    return todo


def run(req: EvalRequest, log: Callable[[str], None] | None = None) -> Summary:
    global _run_id
    _run_id += 1
    log = log or (lambda s: tqdm.write(s, file=sys.stderr))
    summary = Summary()
    planned, summary.unavailable = plan(req)
    for line in summary.unavailable:
        log(f"skip  {line}")
    encoders = EncoderPool(req.encoder, req.weights)
    pool = TaskDataPool(req)
    todo = triage(req, planned, pool, encoders, summary, log)
    if summary.skipped:
        log(f"skip  {len(summary.skipped)} unit(s) already have results for this split, spec and code (use --overwrite to redo)")
    if not todo:
        return summary
    if req.weights is not None:
        encoders.get(todo[0].unit.seed)  # a bad checkpoint fails here, once, before any unit
    device = pick_device(req.device)
    cache_dir = usable_cache_dir(req.cache_dir)
    set_deterministic(bool(req.options.get("deterministic", False)))
    synthetic = get_suite(req.suite).synthetic
    checked: set[str] = set()
    with interrupt.handler(log):
        for p in tqdm(todo, desc="units", disable=not req.progress, file=sys.stderr):
            if interrupt.requested():
                summary.interrupted = True
                break
            key = p.unit.key()
            data = pool.get(p.task)
            if isinstance(data, TaskData) and p.task.id not in checked:
                try:
                    preflight(data, cache_dir, log, progress=req.progress)  # the checks of `lvmbench data verify`
                    checked.add(p.task.id)
                except UserError as e:
                    pool.data[p.task.id] = data = e
            if isinstance(data, UserError):
                summary.failed.append(key)
                log(f"FAIL  {key}: {data}")
                note_failure(req.results, p.unit, str(data))
                continue
            claim = Claim(result_path(req.results, p.unit))
            if not claim.acquire():
                summary.busy.append(key)
                log(f"busy  {key}: another lvmbench process is running this unit")
                continue
            try:
                if finished_meanwhile(req, p, data, pool.fingerprints[p.task.id], encoders):
                    summary.skipped.append(key)
                    continue
                runtime = runtime_info(device, req.options, p.task, data, pool.fingerprints[p.task.id], synthetic, p.unit)
                if "launcher" in req.options:  # which worker of which launch ran it (lvmbench.launch)
                    runtime["launcher"] = req.options["launcher"]
                record = run_unit(p, data, req, device, cache_dir, pool.root(), runtime, encoders, pool.fingerprints[p.task.id])
                keep_aside(result_path(req.results, p.unit), req.overwrite)
                write_result(req.results, record)
                clear_failure(result_path(req.results, p.unit))
                summary.done.append(key)
                log(f"done  {key}  {record.primary_metric}={record.primary:.4f}  ({record.timings['wall_s']:.1f}s)")
            except interrupt.Interrupted:
                summary.interrupted = True
                log(f"stop  {key}: interrupted; nothing written for this unit")
                break
            except UserError as e:
                summary.failed.append(key)
                log(f"FAIL  {key}: {user_message(e)}")
                note_failure(req.results, p.unit, user_message(e))
            except Exception as e:  # a bug, not bad input: keep the traceback, go on with other units
                summary.failed.append(key)
                log(f"ERROR {key}: {e.__class__.__name__}: {e}\n{traceback.format_exc()}")
                note_failure(req.results, p.unit, f"{e.__class__.__name__}: {e}")
            finally:
                claim.release()
    if get_suite(req.suite).synthetic and not summary.interrupted:
        summary.below_baseline = below_baseline(req.results, [p.unit for p in planned if p.unit.key() in set(summary.done) | set(summary.skipped)])
    return summary


# A synthetic-suite unit must beat its baseline by this much (metric units): a pipeline check that
# passes at chance checks nothing.
BASELINE_MARGIN = 0.05


def below_baseline(results: Path, units: list[RunUnit]) -> list[str]:
    """Units whose primary metric does not beat the baseline their result states (chance, the
    training prior, all background, random boxes), one short description each."""
    from lvmbench.stats import higher_is_better

    out = []
    for unit in units:
        try:
            rec = read_result(result_path(results, unit))
        except UserError:
            continue
        base = rec.extra.get("baseline") or {}
        value = base.get("value")
        if value is None or not math.isfinite(float(value)) or base.get("metric") != rec.primary_metric:
            out.append(f"{unit.key()} (no baseline recorded)")
            continue
        sign = 1.0 if higher_is_better(rec.primary_metric) else -1.0
        if sign * (rec.primary - float(value)) <= BASELINE_MARGIN:
            out.append(f"{unit.key()} ({rec.primary_metric} {rec.primary:.3f} vs {base.get('predictor', 'baseline')} {float(value):.3f})")
    return out


def finished_meanwhile(req: EvalRequest, p: Planned, data: TaskData, fingerprint: str, encoders: "EncoderPool") -> bool:
    """Another process finished this unit (with the current identity) while we waited for it."""
    if req.overwrite:
        return False
    path = result_path(req.results, p.unit)
    if not path.is_file():
        return False
    try:
        old = read_result(path)
    except UserError:
        return False
    return not differences(old.identity, current_identity(p, data, fingerprint, encoders.info(p.unit.seed)))


def aside_name(path: Path) -> Path:
    return path.with_name(path.name + ".replaced")


def keep_aside(path: Path, overwrite: bool) -> None:
    """A result about to be replaced without ``--overwrite`` (stale, unreadable, hand-edited) is
    renamed to ``<name>.json.replaced`` (one generation kept), never silently overwritten."""
    if overwrite or not path.is_file():
        return
    try:
        os.replace(path, aside_name(path))
    except OSError as e:
        raise UserError(f"cannot keep the old result aside ({e.strerror})", path=path, fix="move it away by hand, or rerun with --overwrite") from None


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
    fingerprint: str | None = None,
) -> ResultRecord:
    unit, task = p.unit, p.task
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    # Loaded once per run and seed (validates the checkpoint before any work); protocols get copies.
    encoders = encoders or EncoderPool(req.encoder, req.weights)
    encoder, ident = encoders.get(unit.seed, task.preprocess.channels)
    check_channels(encoder, unit.encoder, task)  # one line, not a torch shape error mid-run
    identity = current_identity(p, data, fingerprint or data_fingerprint(data), encoder_info(encoder))

    from lvmbench.encoders.sizes import size_record, track_input_sizes

    sizes: set[tuple[int, int]] = set()  # the image sizes the encoder ran at (hparams.encoder_input_size)
    ctx = RunContext(
        unit=unit,
        task=task,
        data=data,
        identity=ident,
        make_encoder=lambda: track_input_sizes(copy.deepcopy(encoder), sizes),
        settings=p.settings,
        device=device,
        cache_dir=cache_dir,
        progress=req.progress,
        options=req.options,
    )
    out = PROTOCOLS.get(unit.protocol)().run(ctx)
    if not sizes:  # every embedding came from the feature cache, which is keyed by the task's size
        sizes.add((task.preprocess.size, task.preprocess.size))
    out.hparams.setdefault("encoder_input_size", size_record(sizes))
    return build_record(p, data, out, ident, identity, started, device, time.perf_counter() - t0, data_root, runtime)
