"""``Monitors``: what the trainer calls (on the main process only).

    monitors.start(step, encoder, objective)   trim metrics.jsonl to the resumed step; at step 0
                                               report the initial weights (the kNN reference)
    objective.diagnose = monitors.due(step + 1) before a step's forward
    monitors.after_step(rec)                   every step
    monitors.report(step, encoder, objective)  when due(step): write + print one entry

Monitors only read: the encoder is embedded in eval mode under no_grad (BatchNorm statistics and
weights untouched) and no random number is drawn, so a monitored run trains exactly as an
unmonitored one and a resumed run stays bit-exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lvmbench.pretrain.monitors.embedding import embedding_stats
from lvmbench.pretrain.monitors.knn import KNNMonitor, load_monitor_images
from lvmbench.pretrain.monitors.record import (
    NAME,
    SCHEMA,
    Interval,
    format_line,
    read_metrics,
    trim_metrics,
    write_metrics,
)


@dataclass
class MonitorConfig:
    tasks: list[str] = field(default_factory=list)  # kNN monitors (classification tasks)
    every: int | None = None  # None: 20 reports over the run
    suite: str = "lvmmed"
    data_root: str | None = None
    size: int | None = None  # None: the pretraining view size
    k: int = 20


def interval(every: int | None, total: int) -> int:
    return every if every else max(1, math.ceil(total / 20))


class Monitors:
    def __init__(self, cfg: MonitorConfig, out: Path, *, total: int, stop: int, batch_size: int, images: int, view_size: int, device: torch.device, log: Callable[[str], None] = print):
        self.cfg, self.out, self.total, self.stop = cfg, out, total, stop
        self.batch_size, self.images, self.device, self.log = batch_size, images, device, log
        self.every = interval(cfg.every, total)
        size = cfg.size or view_size
        root = Path(cfg.data_root) if cfg.data_root else None
        t0 = time.perf_counter()
        self.knn = [KNNMonitor(load_monitor_images(t, cfg.suite, root, size), cfg.k) for t in cfg.tasks]
        if self.knn:
            counts = ", ".join(f"{m.images.task} ({len(m.images.bank)} train / {len(m.images.query)} val images)" for m in self.knn)
            log(f"[monitor] kNN on {counts} at {size} px, k={cfg.k}, every {self.every} steps; loaded in {time.perf_counter() - t0:.0f} s")
        self.interval = Interval()
        self.first: dict | None = None
        self.t_wall, self.t_cpu = time.perf_counter(), time.process_time()

    @property
    def path(self) -> Path:
        return self.out / NAME

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.stop

    def start(self, step: int, encoder: torch.nn.Module, objective: torch.nn.Module) -> None:
        trim_metrics(self.path, step if step else -1)  # a fresh run (step 0) starts a fresh file
        earlier = read_metrics(self.path)
        self.first = earlier[0] if earlier else None
        if step == 0:
            self.report(0, encoder, objective)
        self.interval = Interval()

    def after_step(self, rec: dict) -> None:
        self.interval.add(rec)

    def report(self, step: int, encoder: torch.nn.Module, objective: torch.nn.Module) -> dict:
        t0 = time.perf_counter()
        iv = self.interval
        obj, sections = iv.means()
        wall, cpu = t0 - iv.t_wall, time.process_time() - iv.t_cpu
        entry: dict = {
            "schema": SCHEMA,
            "step": step,
            "steps_total": self.total,
            "epoch": step * self.batch_size / max(1, self.images),
            "lr": iv.lr,
            "objective": obj,
            "time": {},
            "embedding": {},
            "projection": {},
            "knn": {},
        }
        outputs = getattr(objective, "outputs", {}) if step else {}
        for key in ("embedding", "projection"):
            z = outputs.get(key)
            if z is not None and z.ndim == 2 and z.shape[0] >= 2:
                entry[key] = embedding_stats(z)
        for m in self.knn:
            res, query = m.evaluate(encoder, self.device)
            stats = embedding_stats(query)
            entry["knn"][m.images.task] = {**res, "std": stats["std"], "effective_rank": stats["effective_rank"], "collapsed": stats["collapsed"]}
        monitor_s = time.perf_counter() - t0
        entry["time"] = {
            "wall_s": time.perf_counter() - self.t_wall,
            "cpu_s": time.process_time() - self.t_cpu,
            "images_per_s": iv.steps * self.batch_size / wall if iv.steps and wall > 0 else None,
            "cpu_s_per_image": cpu / (iv.steps * self.batch_size) if iv.steps else None,
            "monitor_s": monitor_s,
            **sections,
        }
        entry["collapsed"] = bool(
            entry["embedding"].get("collapsed") or entry["projection"].get("collapsed") or any(r["collapsed"] for r in entry["knn"].values())
        )
        write_metrics(self.out, entry)
        if self.first is None:
            self.first = entry
        self.log(format_line(entry, self.first))
        self.interval = Interval()  # the next interval's clock starts after this report
        return entry
