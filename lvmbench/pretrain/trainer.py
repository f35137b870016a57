"""Objective-agnostic pretraining loop: data -> two views -> ``objective(batch)`` -> Adam.

Works alone or under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU). Writes to
``out``: ``checkpoint.pt`` (everything needed to resume exactly: objective weights, optimiser,
step, every process's RNG states), ``encoder.safetensors`` (backbone only, in the layout
``lvmbench eval --weights`` reads, e.g. torchvision's for ResNets; its metadata records the
``pooling`` the objective trained, which evaluation then uses), ``pretrain.json`` (config, data
manifest with sha256 per file, summary) and ``log.jsonl`` (per-step losses and timings).

Schedule (paper §3.1 step 9): Adam, lr 2e-3 halved four times. Where the halvings fall is not
stated; here at 1/5, 2/5, 3/5 and 4/5 of the run. The lr is a function of the step, so resuming
needs no scheduler state.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import random
import re
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from tqdm.auto import tqdm

from lvmbench.encoders import create_encoder
from lvmbench.errors import UserError
from lvmbench.pretrain.checkpoint import (
    check_outputs,
    get_rng,
    load_resume,
    ranks_in_sync,
    save_all,
    set_rng,
    trim_log,
)
from lvmbench.pretrain.config import PretrainConfig
from lvmbench.pretrain.data import PretrainDataset, StepSampler, collate, scan
from lvmbench.pretrain.exclusion import (
    exclude_test_images,
    filter_manifest,
    resolve_suites,
)
from lvmbench.pretrain.monitors.session import MonitorConfig, Monitors
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch, validate_options
from lvmbench.pretrain.views import view_config


def _jsonable(x):
    """As pretrain.json stores it (tuples become lists), so saved and resolved values compare."""
    return json.loads(json.dumps(x))


def lr_at(step: int, total: int, base: float, halvings: int) -> float:
    passed = sum(step * (halvings + 1) >= total * k for k in range(1, halvings + 1))
    return base * 0.5**passed


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _device(cfg: PretrainConfig, local_rank: int) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _check_view_size(encoder: torch.nn.Module, cfg: PretrainConfig, device: torch.device) -> None:
    """Fail early, in one line, when the encoder cannot take views of this size (a ViT needs a multiple
    of its patch size)."""
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            encoder.feature_maps(torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=device))
    except (AssertionError, RuntimeError, ValueError) as e:
        raise UserError(
            f"encoder '{cfg.encoder}' cannot take {cfg.image_size}-px views ({str(e).splitlines()[0][:120]})",
            fix="choose an --image-size the encoder accepts (for a ViT: a multiple of its patch size)",
        ) from None
    finally:
        encoder.train(was_training)


def _unused_encoder_params(encoder: torch.nn.Module, size: int, device: torch.device) -> bool:
    """Whether some encoder parameters get no gradient from its last feature map (a ViT's pyramid
    upsamplers, say): DistributedDataParallel must then be told to look for unused parameters."""
    probe = copy.deepcopy(encoder).to(device).train()
    maps, pooled = probe.forward_pooled(torch.zeros(2, 3, size, size, device=device))
    (maps[-1].float().sum() + pooled.float().sum()).backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())


def _build_objective(cfg: PretrainConfig, encoder: torch.nn.Module) -> torch.nn.Module:
    cls = OBJECTIVES.get(cfg.objective)  # options already validated (Trainer.__init__)
    try:
        objective = cls(encoder, **cfg.objective_options)
        objective.check_view_size(cfg.image_size)
    except (TypeError, ValueError) as e:
        raise UserError(f"objective '{cfg.objective}': {e}", fix="check the -o KEY=VALUE options") from None
    except (MemoryError, RuntimeError) as e:  # torch's allocation failures are RuntimeErrors
        if not isinstance(e, (MemoryError, torch.OutOfMemoryError)) and "allocate" not in str(e):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(e))
        what = f"an allocation of {int(asked.group(1)) / 2**30:.1f} GiB failed" if asked else type(e).__name__
        raise UserError(f"objective '{cfg.objective}': its layers do not fit in memory ({what})", fix="smaller widths in -o") from None
    return objective


class Trainer:
    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        validate_options(cfg.objective, cfg.objective_options)  # one line before --out is created
        self.rank, self.world, local_rank = _dist_env()
        self.device = _device(cfg, local_rank)
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.batch_size % self.world:
            raise UserError(f"--batch-size {cfg.batch_size} does not split over {self.world} processes", fix=f"use a multiple of {self.world}")
        self.out = Path(cfg.out)
        self.main = self.rank == 0
        if self.main:
            if self.out.exists() and not self.out.is_dir():
                raise UserError("--out names a file, not a folder", path=self.out, fix="pass a folder (new or one of an earlier run) as --out")
            self.out.mkdir(parents=True, exist_ok=True)
            check_outputs(self.out)
        state = load_resume(self.out, cfg) if cfg.resume else None
        self.items, manifest = scan(cfg.data, cfg.exclude, with_hashes=self.main and state is None)
        manifest = self._exclude_tests(manifest)
        self.manifest = state["manifest"] if state else manifest
        if state and state["num_items"] != len(self.items):
            raise UserError(f"the data changed since the checkpoint ({len(self.items)} images now, {state['num_items']} then)", path=self.out, fix="resume with the same --data/--exclude or start a new --out")
        steps_per_epoch = len(self.items) // cfg.batch_size
        if cfg.steps is None and cfg.epochs is None:
            raise UserError("give --steps or --epochs")
        self.total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * steps_per_epoch))
        self.encoder, self.ident = create_encoder(cfg.encoder, cfg.weights, seed=cfg.seed, pooling=cfg.pooling)
        self.encoder.to(self.device)
        _check_view_size(self.encoder, cfg, self.device)
        self.objective = _build_objective(cfg, self.encoder).to(self.device)
        # Every resolved setting (defaults included): recorded, and a resume must resolve the same.
        self.objective_settings = _jsonable(self.objective.settings(cfg.objective_options))
        if state and "objective_settings" not in state and self.main:
            print("warning: the checkpoint predates recorded objective settings; defaults may have changed since "
                  "(graph-matching: gcn_residual is now false, -o gcn_residual=true keeps the old form)", flush=True)
        if state and "objective_settings" in state and _jsonable(state["objective_settings"]) != self.objective_settings:
            old = state["objective_settings"]
            diff = sorted(k for k in set(old) | set(self.objective_settings) if _jsonable(old.get(k)) != self.objective_settings.get(k))
            raise UserError(
                f"--resume: the objective now resolves to other settings ({', '.join(diff)}) than the checkpoint's (a default changed?)",
                path=self.out / "checkpoint.pt",
                fix=f"pass the checkpoint's values with -o ({', '.join(f'{k}={json.dumps(old.get(k))}' for k in diff)}) or use a new --out",
            )
        # Objectives that group images (graph matching: graphs of 16) say so with ``batch_multiple``.
        multiple = int(getattr(self.objective, "batch_multiple", 1))
        if (cfg.batch_size // self.world) % multiple:
            raise UserError(
                f"{cfg.batch_size // self.world} images per process is not a multiple of {multiple} ({cfg.objective})",
                fix=f"use a --batch-size that is a multiple of {multiple * self.world}",
            )
        self.optimizer = torch.optim.Adam(self.objective.parameters(), lr=cfg.lr)
        self.step = 0
        # Noise and anything else stochastic in the objective: one stream per process.
        torch.manual_seed(cfg.seed * 1000 + self.rank)
        random.seed(cfg.seed * 1000 + self.rank)
        np.random.seed(cfg.seed * 1000 + self.rank)
        if state:
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            if len(state["rng"]) == self.world:
                set_rng(state["rng"][self.rank], self.device)
            else:  # another process count: the data order still resumes exactly, the noise cannot
                torch.manual_seed(cfg.seed * 1000 + self.rank + 7919 * self.step)
                if self.main:
                    print(f"warning: checkpoint written by {len(state['rng'])} processes, resuming with {self.world}: not bit-exact", flush=True)
        self.model: torch.nn.Module = self.objective
        if self.world > 1:
            find_unused = _unused_encoder_params(self.encoder, cfg.image_size, self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.objective, device_ids=ids, find_unused_parameters=find_unused)
        spec = self.encoder.input_spec
        self.views = view_config(cfg.image_size, cfg.view_options)
        self.mean = torch.tensor(spec.mean[:3], device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(spec.std[:3], device=self.device).view(1, 3, 1, 1) * 255

    def _exclude_tests(self, manifest: list[dict]) -> list[dict]:
        """Drop the test images of ``exclude_test_of`` (``exclusion``): computed on the main process
        (which holds the manifest's hashes) and sent to the others, so every process trains on the
        same list."""
        cfg = self.cfg
        self.suites = resolve_suites(cfg.exclude_test_of, cfg.data)
        self.exclusion: dict = {"suites": self.suites, "rule": "default" if cfg.exclude_test_of is None else "--exclude-test-of", "dropped_images": 0}
        if not self.suites:
            return manifest
        keep: list = [None, None]
        if self.main:
            hashes = {e["path"] if not e.get("member") else f"{e['path']}::{e['member']}": e["sha256"] for e in manifest}
            root = Path(cfg.exclude_data_root) if cfg.exclude_data_root else None
            ex = exclude_test_images(self.items, self.suites, root, hashes)
            kept = set(map(id, ex.kept))
            keep = [[i for i, it in enumerate(self.items) if id(it) in kept], {**self.exclusion, **ex.summary()}]
            print(f"--exclude-test-of {','.join(self.suites)}: dropped {len(self.items) - len(ex.kept)} of {len(self.items)} images "
                  f"({', '.join(f'{k} {v}' for k, v in ex.summary()['by_match'].items()) or 'none matched'})", flush=True)
        if self.world > 1:
            dist.broadcast_object_list(keep, src=0)
        self.items = [self.items[i] for i in keep[0]]
        self.exclusion = keep[1]
        return filter_manifest(manifest, self.items)

    def _loader(self, stop: int) -> torch.utils.data.DataLoader:
        cfg = self.cfg
        ds = PretrainDataset(self.items, self.views, seed=cfg.seed, cache_mb=cfg.cache_mb)
        sampler = StepSampler(len(ds), cfg.batch_size, self.step, stop, seed=cfg.seed, rank=self.rank, world=self.world)
        # A private generator: the loader must not draw from the global RNG, whose state is part
        # of the checkpoint (otherwise a resumed run's noise would shift by one draw).
        return torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    def _monitors(self, stop: int, bar) -> Monitors:
        cfg = self.cfg
        suite = cfg.monitor_suite or (self.suites[0] if len(self.suites) == 1 else "lvmmed")
        mcfg = MonitorConfig(list(cfg.monitor_tasks), cfg.monitor_every, suite, cfg.monitor_data_root, cfg.monitor_size, cfg.monitor_k)
        log = bar.write if cfg.progress else (lambda line: print(line, flush=True))
        return Monitors(mcfg, self.out, total=self.total, stop=stop, batch_size=cfg.batch_size, images=len(self.items), view_size=cfg.image_size, device=self.device, log=log)

    def _normalize(self, v: torch.Tensor) -> torch.Tensor:
        return (v.to(self.device, non_blocking=True).float() - self.mean) / self.std

    def _out_of_time(self, t_start: float) -> bool:
        """Past ``max_minutes``: decided by the main process for all (every process must leave at
        the same step, or the others would wait forever in the next all-reduce)."""
        if self.cfg.max_minutes is None:
            return False
        flag = torch.tensor([float(time.perf_counter() - t_start > 60 * self.cfg.max_minutes)], device=self.device)
        if self.world > 1:
            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self) -> Path:
        cfg = self.cfg
        stop = self.total if cfg.stop_at is None else min(self.total, cfg.stop_at)
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        if self.main:
            trim_log(self.out / "log.jsonl", self.step)
        timer = getattr(self.objective, "timer", None)
        bar = tqdm(total=self.total, initial=self.step, disable=not (self.main and cfg.progress), desc="pretrain", dynamic_ncols=True)
        monitors = self._monitors(stop, bar) if self.main else None
        if monitors:
            monitors.start(self.step, self.encoder, self.objective)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and self.device.type == "cuda" else nullcontext()
        recent: list[dict] = []
        totals: dict[str, float] = {}
        t_start = time.perf_counter()
        self.objective.train()
        for v1, v2, b1, b2, _idx in self._loader(stop):
            self._sync()
            t0 = time.perf_counter()
            lr = lr_at(self.step, self.total, cfg.lr, cfg.lr_halvings)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch = PretrainBatch(self._normalize(v1), self._normalize(v2), b1.to(self.device), b2.to(self.device))
            self.objective.diagnose = bool(monitors and monitors.due(self.step + 1))
            with amp:
                loss, logs = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            solver_fwd = timer.totals.get("solver", 0.0) if timer else 0.0
            self._sync()
            tb = time.perf_counter()
            loss.backward()
            self._sync()
            t_back = time.perf_counter() - tb
            self.optimizer.step()
            self._sync()
            step_s = time.perf_counter() - t0
            sections = timer.pop() if timer else {}
            solver_bwd = sections.get("solver", 0.0) - solver_fwd
            rec = {"step": self.step, "lr": lr, **logs, "step_s": step_s, **{f"{k}_s": v for k, v in sections.items()}}
            rec["backward_s"] = t_back - solver_bwd
            self.step += 1
            for k, v in rec.items():
                if k.endswith("_s"):
                    totals[k] = totals.get(k, 0.0) + v
            recent = (recent + [rec])[-20:]
            if self.main:
                if self.step % cfg.log_every == 0 or self.step == stop:
                    with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps(rec) + "\n")
                mean_step = sum(r["step_s"] for r in recent) / len(recent)
                solver = sum(r.get("solver_s", 0.0) for r in recent) / max(1e-9, sum(r["step_s"] for r in recent))
                bar.set_postfix(loss=f"{sum(r['loss'] for r in recent) / len(recent):.3f}", img_s=f"{cfg.batch_size / mean_step:.1f}", solver=f"{100 * solver:.0f}%", refresh=False)
                bar.update(1)
            if monitors:
                monitors.after_step(rec)
                if monitors.due(self.step):
                    monitors.report(self.step, self.encoder, self.objective)
            saved = self.step % cfg.checkpoint_every == 0 or self.step == stop
            if saved:
                self.save(started, totals)
            if self._out_of_time(t_start) and self.step < stop:
                # --max-minutes: a last report and checkpoint where the run stands; --resume continues
                if monitors and not monitors.due(self.step):
                    monitors.report(self.step, self.encoder, self.objective)
                if not saved:
                    self.save(started, totals)
                if self.main:
                    bar.write(f"--max-minutes {cfg.max_minutes:g}: stopped after step {self.step} of {self.total}; --resume continues")
                break
        bar.close()
        return self.out / "encoder.safetensors"

    def save(self, started: str, totals: dict[str, float]) -> None:
        rng = get_rng(self.device)
        if self.world > 1:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        in_sync = ranks_in_sync(self.objective, self.world, self.device)
        if self.main:
            save_all(self, rng_all, started, totals, in_sync)
        if self.world > 1:
            dist.barrier()


def train(cfg: PretrainConfig) -> Path:
    """Run (or resume) a pretraining run; returns the path of ``encoder.safetensors``."""
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
