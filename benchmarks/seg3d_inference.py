"""Slice-wise 3D scoring: the harness's ``evaluate_3d`` vs a bare loop, on the same model and volumes.

In one run, on the first ``--volumes`` test volumes of a 3D task (decoded once: a second
``prepare`` reads the sliced arrays back from the cache, timed as its own row):

- bare, per volume: forward every slice of the volume in batches of ``eval_batch_size``, argmax,
  and per class ``(pred == c) & (target == c)`` sums for the volumetric IoU (a plain PyTorch loop,
  no bookkeeping);
- bare, batched slices: the same with slices of consecutive volumes packed into full batches;
- harness: ``evaluate_3d(..., clean=False)`` — the validation path (the paper's metrics: volumetric
  and per-slice Dice/IoU), and with ``clean=True`` — the test path (plus native-size upsampling,
  per-class Dice/IoU and HD95 per volume).

The model is the task's U-Net with a random-init encoder (a trained one costs the same per slice;
HD95's cost depends on the predicted surfaces, so the test-path row is indicative). The iou3d
column shows that the rows compute the same number. Passes are interleaved ``--repeats`` times and
medians reported, so load from other processes hits all alike.

    .venv/bin/python benchmarks/seg3d_inference.py --encoder resnet18 --task hippocampus_seg3d
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from lvmbench.data.cache import ArrayCache
from lvmbench.data.splits import Split
from lvmbench.data.task_data import load_task_data
from lvmbench.encoders import create_encoder
from lvmbench.protocols.base import RunContext
from lvmbench.protocols.seg3d import evaluate_3d
from lvmbench.protocols.seg_common import make_prep
from lvmbench.protocols.seg_data import Prepared, prepare
from lvmbench.protocols.seg_train import build_model
from lvmbench.runner import EvalRequest, resolve_data_root
from lvmbench.spec import RunOptions, RunUnit
from lvmbench.tasks import get_task

EPS = 1e-6


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def volume_iou(pred: torch.Tensor, target: torch.Tensor, classes: list[int]) -> float:
    """Volumetric IoU per scored class (all voxels pooled), averaged over the classes."""
    ious = []
    for c in classes:
        p, t = pred == c, target == c
        inter, ps, ts = (p & t).sum().item(), p.sum().item(), t.sum().item()
        ious.append((inter + EPS) / (ps + ts - inter + EPS))
    return float(np.mean(ious))


def autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()


@torch.inference_mode()
def bare_per_volume(model, prep: Prepared, classes: list[int], batch: int, device: torch.device, amp: bool) -> float:
    model.eval()
    ious = []
    for vol, target in zip(prep.images, prep.masks):
        preds = []
        for i in range(0, len(vol), batch):
            with autocast(device, amp):
                preds.append(model(vol[i : i + batch, None].to(device).float()).argmax(1).cpu())
        ious.append(volume_iou(torch.cat(preds), target, classes))
    return float(np.mean(ious))


@torch.inference_mode()
def bare_batched(model, prep: Prepared, classes: list[int], batch: int, device: torch.device, amp: bool) -> float:
    model.eval()
    slices = torch.cat(prep.images)
    preds = []
    for i in range(0, len(slices), batch):
        with autocast(device, amp):
            preds.append(model(slices[i : i + batch, None].to(device).float()).argmax(1).cpu())
    pred = torch.cat(preds)
    ious, at = [], 0
    for target in prep.masks:
        ious.append(volume_iou(pred[at : at + len(target)], target, classes))
        at += len(target)
    return float(np.mean(ious))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--task", default="hippocampus_seg3d")
    ap.add_argument("--suite", default="shared-data")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--volumes", type=int, default=24)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--workers", type=int, default=0, help="decode workers")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    spec = get_task(args.task).for_suite(args.suite)
    root = resolve_data_root(EvalRequest(encoder=args.encoder, suite=args.suite, data_root=args.data_root))
    data = load_task_data(spec, root, suite=args.suite)
    cases = data.split.test[: args.volumes]
    data = dataclasses.replace(data, split=Split(data.split.train, data.split.val, cases, data.split.origin))
    enc, ident = create_encoder(args.encoder, seed=0)
    with tempfile.TemporaryDirectory(prefix="lvmbench-seg3d-bench-") as tmp:
        ctx = RunContext(
            unit=RunUnit(suite=args.suite, task_id=spec.id, protocol="seg3d", encoder=args.encoder, weights_sha256=ident.weights_sha256),
            task=spec, data=data, encoder_identity=ident, make_encoder=lambda: copy.deepcopy(enc), settings=spec.settings("seg3d"),
            device=device, cache_dir=Path(tmp), run=RunOptions(progress=False, amp=args.amp, workers=args.workers))
        hp = ctx.settings
        cache = ArrayCache(Path(tmp) / "decoded")
        t0 = time.perf_counter()
        prepare(data.reader, cases, make_prep(ctx, hp), cache, native=True, volumes=True, workers=args.workers, progress=False)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        prep = prepare(data.reader, cases, make_prep(ctx, hp), cache, native=True, volumes=True, workers=args.workers, progress=False)
        t_warm = time.perf_counter() - t0
        n_slices = sum(len(v) for v in prep.images)
        torch.manual_seed(0)
        model = build_model(ctx)
        bs, sc = hp.eval_batch_size, hp.score_classes
        no_hd = hp.model_copy(update={"hd95": False})
        runs = {
            "bare loop, per volume": lambda: bare_per_volume(model, prep, sc, bs, device, args.amp),
            "bare loop, slices batched across volumes": lambda: bare_batched(model, prep, sc, bs, device, args.amp),
            "harness evaluate_3d, validation path": lambda: evaluate_3d(ctx, model, prep, no_hd, "val", clean=False)[0]["iou3d"],
            "harness evaluate_3d, test path (+native, HD95)": lambda: evaluate_3d(ctx, model, prep, hp, "test", clean=True)[0]["iou3d"],
        }
        bare_per_volume(model, prep, sc, bs, device, args.amp)  # warm-up: kernels for every batch shape
        times: dict[str, list[float]] = {k: [] for k in runs}
        iou: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                sync(device)
                t = time.perf_counter()
                iou[name] = fn()
                sync(device)
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [["decode + slice + resize (cache empty)", f"{t_cold:.2f}", "", "", ""], ["read sliced arrays back (cache warm)", f"{t_warm:.2f}", "", "", ""]]
    base = med["bare loop, per volume"]
    rows += [[k, f"{v:.2f}", f"{n_slices / v:.0f}", f"{v / base:.2f}", f"{iou[k]:.4f}"] for k, v in med.items()]
    print(
        f"{spec.id} ({args.suite}): {len(cases)} volumes, {n_slices} slices of {spec.preprocess.size}px, encoder={args.encoder}, "
        f"device={device}, amp={args.amp}, eval batch {bs}, repeats={args.repeats}, threads={torch.get_num_threads()}"
    )
    print(tabulate(rows, headers=["pass", "seconds", "slices/s", "time vs bare", "iou3d"], tablefmt="github"))
    print(f"cold / warm decode = {t_cold / t_warm:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
