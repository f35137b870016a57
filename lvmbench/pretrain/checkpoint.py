"""Checkpoints of a pretraining run: RNG states, the resume check, and the files a save writes
(``checkpoint.pt``, ``encoder.safetensors``, ``pretrain.json``), each written atomically."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import distributed as dist

from lvmbench.encoders.checkpoint import sha256_file
from lvmbench.errors import UserError
from lvmbench.outputs import check_target, write_atomic
from lvmbench.pretrain.config import PretrainConfig
from lvmbench.runner import package_versions

if TYPE_CHECKING:  # annotations only: the trainer imports this module
    from lvmbench.pretrain.trainer import Trainer



def get_rng(device: torch.device) -> dict:
    """This process's RNG states as tensors and plain Python values (``torch.load(weights_only=True)``
    can read them back)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# what a resume reads from checkpoint.pt (save_all writes them all)
RESUME_KEYS = ("step", "objective", "optimizer", "rng", "config", "objective_settings", "num_items")


def load_resume(out: Path, cfg: PretrainConfig) -> dict | None:
    """The saved state, after checking that this run is the one that wrote it."""
    path = out / "checkpoint.pt"
    if not path.is_file():
        raise UserError("--resume: no checkpoint.pt here", path=out, fix="drop --resume to start a new run, or point --out at the run to continue")
    fix = "restore checkpoint.pt and pretrain.json from a copy, or start a new run in another --out (this one's files are left as they are)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged archive, an empty file, a foreign pickle weights_only refuses
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:160]
        raise UserError(f"--resume: checkpoint.pt cannot be read ({why})", path=path, fix=fix) from None
    missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing or not isinstance(state["config"], dict):
        raise UserError(f"--resume: checkpoint.pt is not one of lvmbench pretrain's (no {', '.join(missing or ['config'])})", path=path, fix=fix)
    saved, now = state["config"], cfg.identity()
    # A setting added after the checkpoint was written took its default then.
    defaults = {f.name: f.default for f in fields(PretrainConfig) if f.default is not MISSING}
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k, defaults.get(k)) != now.get(k))
    if diff:
        raise UserError(f"--resume with different settings ({', '.join(diff)}) than the checkpoint", path=path, fix="repeat the original arguments (only runtime flags such as --workers may change) or use a new --out")
    try:
        state["manifest"] = json.loads((out / "pretrain.json").read_text(encoding="utf-8"))["data"]["manifest"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError("--resume: pretrain.json is missing, unreadable or has no data.manifest (the run's file list)", path=out / "pretrain.json", fix=fix) from None
    return state


def _step_of(line: str) -> float:
    """A log line's step; a line a crash cut short (or any other) counts as past every checkpoint."""
    try:
        entry = json.loads(line)
    except ValueError:
        return float("inf")
    step = entry.get("step") if isinstance(entry, dict) else None
    return step if type(step) is int else float("inf")


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint a run resumes from (they are about to be redone)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_bytes().decode("utf-8", errors="replace").splitlines() if _step_of(ln) < step]
    write_atomic(path, "".join(ln + "\n" for ln in keep), option=OUT_OPTION)


def ranks_in_sync(module: torch.nn.Module, world: int, device: torch.device) -> bool:
    """Whether every process holds the same parameters (per-tensor sums compared exactly). Buffers
    are left out: BatchNorm running statistics are per process until DDP broadcasts rank 0's at
    the next forward, and rank 0's are the ones saved."""
    if world == 1:
        return True
    sums = torch.stack([p.detach().double().sum() for p in module.parameters()])
    gathered = [torch.empty_like(sums) for _ in range(world)]
    dist.all_gather(gathered, sums.to(device))
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


OUT_OPTION = "--out DIR"
# what a run writes in --out; a link, FIFO, device or folder there is refused before training starts
OUTPUTS = ("checkpoint.pt", "encoder.safetensors", "pretrain.json", "log.jsonl", "metrics.jsonl")


def check_outputs(out: Path) -> None:
    """One line, before any step, if a file the run will write in ``out`` is not a plain file."""
    for name in OUTPUTS:
        check_target(out / name, OUT_OPTION)


def _write(path: Path, data: bytes | str) -> None:
    write_atomic(path, data, option=OUT_OPTION)  # checked again, exclusive temp name, the umask's mode


def save_all(tr: Trainer, rng_all: list[dict], started: str, totals: dict[str, float], in_sync: bool) -> None:
    cfg = tr.cfg
    state = {
        "step": tr.step,
        "total": tr.total,
        "objective": tr.objective.state_dict(),
        "optimizer": tr.optimizer.state_dict(),
        "rng": rng_all,
        "config": cfg.identity(),
        "objective_settings": tr.objective_settings,
        "num_items": len(tr.items),
        "world_size": tr.world,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    _write(tr.out / "checkpoint.pt", buf.getvalue())
    backbone = {k: v.detach().cpu().contiguous().clone() for k, v in tr.encoder.backbone_state_dict().items()}
    # ``pooling`` is read back by create_encoder: evaluation embeds what the objective trained.
    meta = {"lvmbench": "pretrain", "objective": cfg.objective, "encoder": cfg.encoder, "step": str(tr.step), "pooling": tr.encoder.pooling}
    enc_path = tr.out / "encoder.safetensors"
    _write(enc_path, safetensors_bytes(backbone, metadata=meta))
    steps_done = max(1, tr.step)
    summary = {
        "schema": 1,
        "config": asdict(cfg),
        # options: as typed; settings: every resolved value, defaults included
        "objective": {"name": cfg.objective, "options": cfg.objective_options, "settings": tr.objective_settings},
        "views": asdict(tr.views),
        "encoder": {"name": cfg.encoder, "init_weights": tr.ident.weights_path, "init_sha256": tr.ident.weights_sha256, "pooling": tr.encoder.pooling},
        "world_size": tr.world,
        "ranks_in_sync": in_sync,
        "steps_total": tr.total,
        "steps_done": tr.step,
        "epochs_done": tr.step * cfg.batch_size / len(tr.items),
        "finished": tr.step >= tr.total,
        "mean_times_s": {k: v / steps_done for k, v in totals.items()},
        "output": {
            "encoder": enc_path.name,
            "encoder_sha256": sha256_file(enc_path),
            "eval": f"lvmbench eval --encoder {cfg.encoder} --weights {enc_path}",
        },
        "data": {
            "sources": cfg.data,
            "exclude": cfg.exclude,
            "exclude_test_of": tr.exclusion,
            "num_images": len(tr.items),
            "num_files": len(tr.manifest),
            "manifest": tr.manifest,
        },
        "versions": package_versions(),
        "device": str(tr.device),
        "started_at": started,
        "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write(tr.out / "pretrain.json", json.dumps(summary, indent=1))
