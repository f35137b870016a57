"""What a result depends on beyond its unit: threads, determinism flags, data and cache versions.

The same command on the same machine gives the same metrics (tests/test_determinism.py). Between
runs the numbers can still move when something outside the unit changes; each of those is recorded
in ``ResultRecord.runtime`` so two results can be told apart:

- thread counts and the CPU's vector instruction set (floating-point reduction order);
- torch's determinism switches, cuDNN autotuning and TF32 (GPU kernels);
- data-loader workers (which worker draws which augmentation) and autocast;
- the data itself: a fingerprint of every case's id, file paths, sizes and content stamps per
  split, the split's origin,
  the decoded-cache and synthetic-data versions, a hash of the task spec as run (after the
  suite's profile), so an edited YAML is visible even without a version bump, and a hash of the
  training cases the unit's label fraction and seed selected.
"""

from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace
from typing import Any

import torch

from lvmbench.spec import RunUnit, TaskSpec

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED", "LVMBENCH_SPLITS")


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (GPU: slower; CPU kernels already are, given threads)."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def data_fingerprint(data: Any) -> str:
    """sha256 (16 hex) over the case id and, per file, its path relative to the data root, size
    and content stamp of every case in the split, plus the reader. Which part a case is in is the
    split hash's business: moving a case between parts does not change the data.

    The content stamp (``lvmbench.data.cache.content_stamp``: size + first and last 64 KiB) sees a
    file edited in place with its size and mtime restored; it costs one small read per file, once
    per process (the pre-run check has usually stamped every file already). Modification times and
    the data root's absolute path are left out: copies change them, and the same data elsewhere
    should give the same fingerprint.
    """
    from lvmbench.data.cache import content_stamp

    h = hashlib.sha256()
    h.update(json.dumps([type(data.reader).__name__, data.reader.options], sort_keys=True, default=str).encode())
    cases = {c.id: c for name in ("train", "val", "test") for c in data.split[name]}
    for cid in sorted(cases):
        files = []
        for f in cases[cid].files or (cases[cid].image,):
            try:
                st = (data.root / f).stat()
                files.append([f, st.st_size, content_stamp(data.root / f, st)])
            except OSError:
                files.append([f, -1, ""])
        h.update(json.dumps([cid, files]).encode())
    return h.hexdigest()[:16]


def task_hash(task: TaskSpec) -> str:
    return hashlib.sha256(task.model_dump_json(exclude={"folder"}).encode()).hexdigest()[:16]


def train_subset_hash(data: Any, unit: RunUnit) -> str:
    """sha256 (16 hex) of the training case ids the unit's label fraction and seed select."""
    from lvmbench.data.splits import label_subset

    ids = sorted(c.id for c in label_subset(data.split.train, unit.label_fraction, unit.seed))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def runtime_info(
    device: torch.device,
    options: dict[str, Any],
    task: TaskSpec,
    data: Any,
    fingerprint: str,
    synthetic: bool,
    unit: RunUnit | None = None,
) -> dict[str, Any]:
    from lvmbench.data.cache import PREPROCESS_VERSION
    from lvmbench.protocols.features import loader_workers

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
        "amp": bool(options.get("amp", False)),
        "compile": bool(options.get("compile", False)),
        "loader_workers": loader_workers(SimpleNamespace(options=options, device=device)),  # type: ignore[arg-type]
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "preprocess_version": PREPROCESS_VERSION,
        "data_fingerprint": fingerprint,
        "split_origin": str(getattr(data.split, "origin", "task split spec")),
        "task_spec_sha256": task_hash(task),
    }
    if unit is not None:
        info["train_subset_sha256"] = train_subset_hash(data, unit)
    if synthetic:
        from lvmbench.data.synth import SYNTH_VERSION

        info["synth_version"] = SYNTH_VERSION
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info
