"""Typed launcher settings: what ``eval --launcher local|slurm`` accepts, checked before any work.

Like protocol settings, each launcher declares its options as a pydantic model (type, range,
default, one-line doc); a bad value is one line naming the command-line option and the fix. The
resolved values are printed by ``--dry-run`` and each result records the worker that ran it
(``runtime.launcher``).
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from lvmbench.errors import UserError

PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]

# Feature-based units (kNN, linear heads on cached features, retrieval, ...) take seconds to
# minutes; a bundle of them shares one job start and, per task, one data load and feature extraction.
DEFAULT_BUNDLE = 8


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class LocalSettings(_Model):
    """N worker processes on this machine, each running one bundle of units at a time."""

    jobs: PosInt = Field(description="worker processes", le=256)
    devices: tuple[NonNegInt, ...] = Field((), description="CUDA device indices, one per worker (CUDA_VISIBLE_DEVICES); empty: CPU or the default device")
    threads: PosInt = Field(description="torch intra-op threads per worker (workers x threads <= cores)")
    bundle: PosInt = Field(DEFAULT_BUNDLE, description="short (feature-based) units run together in one worker call, at most this many")


class SlurmSettings(_Model):
    """A Slurm job array through submitit: one array task per long unit or bundle of short units."""

    job_name: str = Field("lvmbench", description="Slurm job name")
    partition: str | None = Field(None, description="--partition")
    account: str | None = Field(None, description="--account")
    gpus_per_task: NonNegInt = Field(0, description="GPUs per array task (--gpus-per-node; one task per node)")
    cpus_per_task: PosInt | None = Field(None, description="--cpus-per-task (default: the cluster's)")
    mem_gb: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)] | None = Field(None, description="--mem in GB (default: the cluster's)")
    time_min: PosInt = Field(240, description="--time per array task, minutes; a unit still running then is requeued (detection and segmentation resume)")
    max_parallel: PosInt = Field(256, description="array tasks running at once (--array=...%N)")
    sbatch: dict[str, str] = Field(default_factory=dict, description="extra #SBATCH flags, e.g. qos=high, constraint=a100")
    bundle: PosInt = Field(DEFAULT_BUNDLE, description="short (feature-based) units per array task, at most this many")
    max_requeue: NonNegInt = Field(3, description="requeues after a time-out (preemptions requeue without limit)")
    wait: bool = Field(False, description="stay until every array task has ended and print the summary")

    @field_validator("job_name", "partition", "account")
    @classmethod
    def _slurm_name(cls, v: str | None) -> str | None:
        # written into the sbatch script: a space, quote or newline would be a broken or foreign line
        if v is not None and not SLURM_NAME.fullmatch(v):
            raise ValueError("is not a Slurm name (letters, digits, _ . + -; a comma-separated list for several partitions)")
        return v


LauncherName = Literal["none", "local", "slurm"]

SLURM_NAME = re.compile(r"[A-Za-z0-9_.+-]+(?:,[A-Za-z0-9_.+-]+)*")
# sbatch flags the launcher writes itself: through --sbatch they would break the array or its logs
LAUNCHER_FLAGS = {"array", "output", "error", "signal", "job-name", "open-mode", "wrap", "parsable"}

SLURM_OPTIONS = {
    "partition": "--partition",
    "account": "--account",
    "gpus_per_task": "--gpus-per-task",
    "cpus_per_task": "--cpus-per-task",
    "mem_gb": "--mem-gb",
    "time_min": "--time",
    "max_parallel": "--max-parallel",
    "sbatch": "--sbatch",
    "max_requeue": "--max-requeue",
    "wait": "--wait",
}


def _validated(model: type[_Model], values: dict, names: dict[str, str]) -> _Model:
    try:
        return model.model_validate(values)
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0]) if first.get("loc") else ""
        option = names.get(key, "--" + key.replace("_", "-"))
        text = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{option} {values.get(key)!r}: {text}", fix=f"see `lvmbench eval --help` for {option}") from None


MAX_TIME_S = 366 * 86400


def parse_time(text: str | None) -> int | None:
    """Slurm's time formats (``MM``, ``HH:MM:SS``, ``D-HH[:MM]``) as whole minutes (rounded up)."""
    if text is None:
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise UserError(f"--time '{text}' is not a Slurm time", fix="e.g. --time 240 (minutes), --time 4:00:00 or --time 1-00:00")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is None and b is None:  # MM
        seconds = a * 60
    elif days is None and c is None:  # MM:SS
        seconds = a * 60 + b
    elif days is None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    else:  # D-HH, D-HH:MM, D-HH:MM:SS
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if seconds == 0:  # Slurm reads 0 as "no limit": the partition's maximum, or a refusal
        raise UserError(f"--time '{text}' is zero, which Slurm reads as no limit", fix="give the limit per array task, e.g. --time 4:00:00")
    if seconds > MAX_TIME_S:
        raise UserError(f"--time '{text}' is more than a year", fix="give the limit per array task, e.g. --time 4:00:00 or --time 2-00:00")
    return max(1, -(-seconds // 60))


def parse_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key, value = key.strip().lstrip("-"), value.strip()
        if not sep or not key or not value:
            raise UserError(f"{option} '{item}' is not KEY=VALUE", fix=f"e.g. {option} qos=high {option} constraint=a100")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise UserError(f"{option} '{item}': '{key}' is not an sbatch option name", fix=f"e.g. {option} qos=high (the long name of the sbatch option, without --)")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UserError(f"{option} {item!r}: the value holds a control character (a newline would add a line to the job script)", fix="give the value on one line")
        flag = key.replace("_", "-")
        own = {v.removeprefix("--"): v for v in (*SLURM_OPTIONS.values(), "--mem-gb")}
        native = {"time": "--time", "partition": "--partition", "account": "--account", "mem": "--mem-gb", "cpus-per-task": "--cpus-per-task", "gpus-per-node": "--gpus-per-task"}
        if flag in native or flag in own:
            opt = native.get(flag) or own[flag]
            raise UserError(f"{option} '{item}': {opt} sets that", fix=f"use {opt} instead of {option} {key}=...")
        if flag in LAUNCHER_FLAGS:
            raise UserError(f"{option} '{item}': the launcher sets --{flag} itself (the job array and its logs under <results>/_jobs/)", fix=f"drop {option} {key}=...")
        out[key] = value
    return out


def parse_devices(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        devices = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserError(f"--devices '{text}' is not a list of GPU indices", fix="e.g. --devices 0,1,2,3") from None
    if not devices or any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise UserError(f"--devices '{text}': give each GPU index once, 0 or above", fix="e.g. --devices 0,1,2,3")
    return devices


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_settings(jobs: int | None, devices_text: str | None, device: str | None, bundle: int | None) -> LocalSettings:
    """``--jobs``/``--devices`` resolved: one GPU per worker, or the cores shared among CPU workers."""
    devices = parse_devices(devices_text)
    if devices:
        if device is not None and device != "cuda":
            raise UserError(f"--device {device} and --devices {devices_text} both choose the GPU", fix="keep --devices (one GPU per worker) and drop --device")

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--devices {devices_text}: this machine has no usable CUDA device", fix="drop --devices: CPU workers share the cores")
        if max(devices) >= count:
            raise UserError(f"--devices {devices_text}: only {count} CUDA device(s) here", fix=f"use indices 0 .. {count - 1}")
        jobs = jobs or len(devices)
        if jobs != len(devices):
            raise UserError(f"--jobs {jobs} with {len(devices)} device(s): one GPU per worker", fix=f"use --jobs {len(devices)}, or list {jobs} devices")
    if jobs is None:
        raise UserError("--launcher local needs --jobs N (or --devices)", fix="e.g. --launcher local --jobs 2, or --devices 0,1")
    if not devices and isinstance(jobs, int) and cpu_cores() < jobs <= 256:
        # every worker needs a core of its own: more only thrash (and each holds a model in memory)
        raise UserError(f"--jobs {jobs} is more than this machine's {cpu_cores()} CPU core(s)", fix=f"use --jobs {cpu_cores()} or fewer (or --devices to give each worker a GPU)")
    threads = max(1, cpu_cores() // max(1, jobs or 1))
    values = {"jobs": jobs, "devices": devices, "threads": threads}
    if bundle is not None:
        values["bundle"] = bundle
    return _validated(LocalSettings, values, {"jobs": "--jobs", "devices": "--devices", "bundle": "--bundle"})  # type: ignore[return-value]


def slurm_settings(values: dict) -> SlurmSettings:
    given = {k: v for k, v in values.items() if v is not None}
    return _validated(SlurmSettings, given, {**SLURM_OPTIONS, "bundle": "--bundle"})  # type: ignore[return-value]


def check_combination(launcher: str, local_given: dict[str, object], slurm_given: dict[str, object]) -> None:
    """An option of one launcher given with another is a mistake worth one line, not silence."""
    if launcher not in ("none", "local", "slurm"):
        raise UserError(f"--launcher '{launcher}' is not a launcher", fix="use --launcher local (worker processes here) or --launcher slurm (a job array)")
    wrong = []
    if launcher != "local":
        wrong += [name for name, v in local_given.items() if v not in (None, False)]
    if launcher != "slurm":
        wrong += [name for name, v in slurm_given.items() if v not in (None, False, [], ())]
    if wrong:
        owner = "slurm" if wrong[0] in SLURM_OPTIONS.values() else "local"
        raise UserError(f"{wrong[0]} applies to --launcher {owner}", fix=f"add --launcher {owner}, or drop {', '.join(wrong)}")
