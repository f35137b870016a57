"""A finished unit's record: its metrics and everything needed to reproduce and trust them —
settings, identity, counts, versions, git commit, device, and what else can move a number on one
machine (``runtime``: threads, instruction set, determinism switches, loader workers, data and
cache versions)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata as md
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from lvmbench import __version__
from lvmbench.data.cache import PREPROCESS_VERSION
from lvmbench.data.fingerprint import train_subset_hash
from lvmbench.data.synth import SYNTH_VERSION
from lvmbench.data.task_data import TaskData
from lvmbench.encoders.base import EncoderIdentity
from lvmbench.errors import UserError
from lvmbench.protocols.base import ProtocolOutput, loader_workers
from lvmbench.registry import plugin_packages
from lvmbench.runner.request import Planned
from lvmbench.spec import CaseScore, ResultRecord, RunOptions, RunUnit, TaskSpec
from lvmbench.tasks import task_origin

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED", "LVMBENCH_SPLITS")

# everything that decodes, resizes or scores data can move a metric, not only the model code
VERSIONED = ("torch", "torchvision", "timm", "segmentation-models-pytorch", "monai", "numpy", "scipy", "scikit-learn", "pillow", "nibabel", "pydicom", "pycocotools", "mmdet", "mmcv")


@functools.cache
def package_versions() -> dict[str, str]:
    """Once per process: installed versions do not change during a run (and cost ~20 ms a unit)."""
    out = {"python": platform.python_version(), "lvmbench": __version__}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    out.update(plugin_packages())  # installed packages that plug readers, encoders, tasks ... in
    return out


_run_id = 0  # bumped once per run: a long-lived process asks git again (it may see new commits)


def new_run() -> None:
    global _run_id
    _run_id += 1


def git_commit() -> str | None:
    """The checkout's commit (``-dirty`` with local edits), asked of git once per run: two git
    subprocesses per unit cost more than a warm-cache frozen unit."""
    return _git_commit(Path(__file__).resolve().parents[2], _run_id)


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


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (GPU: slower; CPU kernels already are, given threads)."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def task_hash(task: TaskSpec) -> str:
    return hashlib.sha256(task.model_dump_json(exclude={"folder"}).encode()).hexdigest()[:16]


def runtime_info(device: torch.device, run: RunOptions, task: TaskSpec, data: TaskData, fingerprint: str, synthetic: bool, unit: RunUnit | None = None) -> dict[str, Any]:
    """What, besides the unit's identity, can move its numbers on one machine (recorded, not compared)."""
    info: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "amp": run.amp,
        "compile": run.compile,
        "loader_workers": loader_workers(run, device),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "preprocess_version": PREPROCESS_VERSION,
        "data_fingerprint": fingerprint,
        "split_origin": str(getattr(data.split, "origin", "task split spec")),
        "task_spec_sha256": task_hash(task),
    }
    if unit is not None:
        info["train_subset_sha256"] = train_subset_hash(data, unit)
    if synthetic:
        info["synth_version"] = SYNTH_VERSION
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    if run.launcher is not None:  # which worker of which launch ran it (lvmbench.launch)
        info["launcher"] = run.launcher
    return info


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
