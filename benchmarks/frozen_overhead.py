"""Frozen-protocol overhead: the whole set of frozen-encoder units vs one bare embed pass.

Both are measured in this run, on the same images, encoder and thread count:

- bare: a hand-written loop that decodes every image of the tasks (train+val+test) with PIL,
  resizes, normalises and calls ``encoder.embed`` once per batch — the minimum any harness needs —
  once with NCHW batches and once with channels-last ones (what the harness feeds the encoder);
  the target ratio is against the faster of the two;
- harness: ``lvmbench eval`` for every frozen protocol of those tasks (linear and MLP heads, kNN,
  retrieval, similarity queries) from empty caches, then the same again with warm caches.

    python benchmarks/frozen_overhead.py --encoder resnet50 --suite shared-data \
        --tasks brain_tumor_linear,retinamnist_linear
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from lvmbench.data.task_data import load_task_data
from lvmbench.data.transforms import input_norm, normalize_batch, resize_image
from lvmbench.encoders import create_encoder
from lvmbench.runner import EvalRequest, resolve_data_root, run
from lvmbench.spec import RunOptions
from lvmbench.tasks import get_task

FROZEN = ["linear", "knn", "retrieval", "similarity_queries"]


def bare_pass(encoder_name: str, tasks: list[str], suite: str, data_root: Path | None, batch: int, channels_last: bool = False, device: str = "cpu", amp: bool = False) -> tuple[float, int]:
    dev = torch.device(device)
    encoder, _ = create_encoder(encoder_name)
    encoder.eval().to(dev)
    if channels_last and dev.type == "cuda":  # as the harness does: weights channels-last on CUDA only
        encoder = encoder.to(memory_format=torch.channels_last)
    # bf16 autocast on CUDA, as `eval --amp` embeds
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and dev.type == "cuda" else contextlib.nullcontext()
    root = resolve_data_root(EvalRequest(encoder=encoder_name, suite=suite, data_root=data_root))
    n = 0
    t0 = time.perf_counter()
    for tid in tasks:
        spec = get_task(tid).for_suite(suite)
        data = load_task_data(spec, root)
        cases = data.split.train + data.split.val + data.split.test
        pre = spec.preprocess
        with torch.inference_mode():
            for i in range(0, len(cases), batch):
                arrs = [resize_image(data.reader.load_image(c), pre.size, pre.resize, pre.channels) for c in cases[i : i + batch]]
                x = normalize_batch(torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).to(dev), input_norm(None, pre.intensity, encoder.input_spec))
                with autocast:
                    encoder.embed(x.contiguous(memory_format=torch.channels_last) if channels_last else x).float().cpu()
                n += len(arrs)
    return time.perf_counter() - t0, n


def harness_pass(encoder_name: str, tasks: list[str], suite: str, data_root: Path | None, cache: Path, results: Path, overwrite: bool,
                 protocols: list[str] = FROZEN, device: str = "cpu", amp: bool = False) -> tuple[float, int]:
    req = EvalRequest(
        encoder=encoder_name,
        suite=suite,
        tasks=tasks,
        protocols=list(protocols),
        heads=["linear", "mlp"],
        data_root=data_root,
        results=results,
        cache_dir=cache,
        overwrite=overwrite,
        run=RunOptions(progress=False, device=device, amp=amp))
    t0 = time.perf_counter()
    summary = run(req, log=lambda s: None)
    if summary.failed:
        raise SystemExit(f"harness run failed: {summary.failed}")
    return time.perf_counter() - t0, len(summary.done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="resnet50")
    ap.add_argument("--suite", default="shared-data")
    ap.add_argument("--tasks", default="brain_tumor_linear,retinamnist_linear")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--protocols", default=",".join(FROZEN), help="frozen protocols the harness runs")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both passes)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA in both passes (eval --amp)")
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    protocols = [p for p in args.protocols.split(",") if p]
    torch.manual_seed(0)
    kw = {"device": args.device, "amp": args.amp}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_bare, n_images = bare_pass(args.encoder, tasks, args.suite, args.data_root, args.batch, **kw)
        t_bare_cl, _ = bare_pass(args.encoder, tasks, args.suite, args.data_root, args.batch, channels_last=True, **kw)
        t_cold, units = harness_pass(args.encoder, tasks, args.suite, args.data_root, tmp / "cache", tmp / "results", False, protocols, **kw)
        t_warm, _ = harness_pass(args.encoder, tasks, args.suite, args.data_root, tmp / "cache", tmp / "results", True, protocols, **kw)
    fastest = min(t_bare, t_bare_cl)
    rows = [
        ["bare embed pass (decode + resize + embed)", f"{t_bare:.1f}", f"{t_bare / t_bare:.2f}", f"{t_bare / fastest:.2f}", n_images],
        ["bare embed pass, channels-last batches", f"{t_bare_cl:.1f}", f"{t_bare_cl / t_bare:.2f}", f"{t_bare_cl / fastest:.2f}", n_images],
        [f"harness, {units} frozen units, cold caches", f"{t_cold:.1f}", f"{t_cold / t_bare:.2f}", f"{t_cold / fastest:.2f}", n_images],
        [f"harness, {units} frozen units, warm caches", f"{t_warm:.1f}", f"{t_warm / t_bare:.2f}", f"{t_warm / fastest:.2f}", n_images],
    ]
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"encoder={args.encoder} suite={args.suite} tasks={','.join(tasks)} protocols={','.join(protocols)} device={where} amp={'bf16' if args.amp else 'off'}")
    print(f"bare throughput: {n_images / fastest:.1f} images/s (fastest bare pass)")
    print(tabulate(rows, headers=["run", "seconds", "ratio vs bare", "ratio vs fastest bare", "images"], tablefmt="github"))


if __name__ == "__main__":
    main()
