"""One summary per monitor interval: ``metrics.jsonl`` (one JSON object a line) and a printed line.

Schema (``"schema": 1``; every group is present, possibly empty):

    step, steps_total, epoch, lr          where the run is (step = optimiser steps done)
    objective: {name: mean}               each loss term and diagnostic the objective logs, averaged
                                          over the interval's steps (graph matching: loss,
                                          match_acc, vertex_top1, vertex_gap; on monitor steps
                                          match_acc_clean, graphs_exact_clean)
    time: {wall_s, cpu_s, images_per_s, cpu_s_per_image, monitor_s, <section>_s}
                                          wall and process CPU seconds since the run (or resume)
                                          started, the interval's throughput, the monitors' own
                                          cost, mean per-step section times
    embedding, projection: {std, effective_rank, max_rank, dim, collapsed}
                                          the last training batch's pooled embeddings / projector
                                          outputs (``embedding.embedding_stats``)
    knn: {task: {acc, balanced_acc, k, bank, queries, std, effective_rank, collapsed}}
                                          online kNN on the task's validation split, and the
                                          spread of those (eval-mode) embeddings
    collapsed                             any of the above flagged complete collapse

The entry at step 0 is written before the first optimiser step: the encoder's initial weights
(random init, or ``--weights``), the reference every later kNN value is read against.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lvmbench.results import write_atomic

SCHEMA = 1
NAME = "metrics.jsonl"


class Interval:
    """Accumulates the trainer's per-step records between two monitor reports."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.lr: float | None = None
        self.t_wall = time.perf_counter()
        self.t_cpu = time.process_time()

    def add(self, rec: dict) -> None:
        self.steps += 1
        self.lr = rec.get("lr", self.lr)
        for k, v in rec.items():
            if k in ("step", "lr") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> tuple[dict[str, float], dict[str, float]]:
        """(objective logs, per-step section times) averaged over the interval."""
        avg = {k: self.sums[k] / self.counts[k] for k in self.sums}
        return {k: v for k, v in avg.items() if not k.endswith("_s")}, {k: v for k, v in avg.items() if k.endswith("_s")}


def read_metrics(path: Path) -> list[dict]:
    """Every complete entry: a JSON object with an integer ``step`` (a line cut short by a crash,
    or one edited into something else, is skipped)."""
    out = []
    if not path.is_file():
        return out
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and type(entry.get("step")) is int:
            out.append(entry)
    return out


def trim_metrics(path: Path, step: int) -> None:
    """Keep entries up to ``step`` (a resumed run redoes the steps after its checkpoint)."""
    if not path.is_file():
        return
    keep = [e for e in read_metrics(path) if int(e.get("step", -1)) <= step]
    write_atomic(path, "".join(json.dumps(e) + "\n" for e in keep), option="--out DIR")


def append_metrics(path: Path, entry: dict) -> None:
    # One write of one complete line: a crash leaves at worst a partial last line, which
    # read_metrics skips and the next trim removes.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


def format_line(e: dict, first: dict | None = None) -> str:
    """One human line per interval: where, loss, kNN (vs step 0), collapse, matching, speed."""
    parts = [f"[monitor] step {e['step']}/{e['steps_total']} ep {e['epoch']:.1f}"]
    obj = e.get("objective") or {}
    if "loss" in obj:
        parts.append(f"loss {obj['loss']:.4f}")
    for task, r in (e.get("knn") or {}).items():
        ref = ((first or {}).get("knn") or {}).get(task, {}).get("acc")
        parts.append(f"knn {task} {r['acc']:.3f}" + (f" (step 0: {ref:.3f})" if ref is not None and e["step"] else ""))
    emb = e.get("embedding") or {}
    if emb:
        parts.append(f"emb rank {emb['effective_rank']:.1f}/{emb['max_rank']} std {emb['std']:.2f}")
    for key, label in (("match_acc_clean", "match"), ("contrastive_acc", "contrast"), ("invariance", "inv")):
        if key in obj:
            parts.append(f"{label} {obj[key]:.3f}")
    t = e.get("time") or {}
    if t.get("images_per_s"):
        parts.append(f"{t['images_per_s']:.1f} img/s")
    if e.get("collapsed"):
        parts.append("COLLAPSED")
    return " | ".join(parts)


def write_metrics(out: Path, entry: dict) -> Path:
    path = out / NAME
    append_metrics(path, entry)
    return path


__all__ = ["NAME", "SCHEMA", "Interval", "append_metrics", "format_line", "read_metrics", "trim_metrics", "write_metrics"]
