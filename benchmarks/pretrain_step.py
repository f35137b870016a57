"""Graph-matching pretraining step time: the batched on-device solver vs the per-graph CPU loop.

One training step (two views of ``--batch-size`` images -> encoder -> graphs of 16 -> affinities ->
matching solves (forward + IMLE backward) -> backward -> Adam) is timed section by section, with
the objective's solver set to ``batched`` (all graphs at once on the step's device) and to ``loop``
(each graph on the CPU, one after another: the way a CPU solver library such as LPMP is called).
Steps of the two modes alternate so that load from other processes hits both alike; medians are
reported. A second table times the two IMLE solves alone for growing numbers of graphs.

    .venv/bin/python benchmarks/pretrain_step.py --encoder resnet18 --image-size 64 --batch-size 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tabulate import tabulate

from lvmbench.encoders import create_encoder
from lvmbench.pretrain.objectives import OBJECTIVES, PretrainBatch
from lvmbench.pretrain.solver import solve_qap, solve_qap_loop

SECTIONS = ("encoder", "affinity", "solver", "backward", "step")


def make_batch(n: int, size: int, device: torch.device) -> PretrainBatch:
    """Two noisy copies of random images, boxes of random overlapping crops (content does not
    change the solver's work: its iteration counts are fixed)."""
    x = torch.randn(n, 3, size, size, device=device)
    lo = torch.rand(n, 2, device=device) * 0.4
    boxes1 = torch.cat([lo, lo + 0.6], dim=1)
    boxes2 = torch.cat([lo + 0.05, lo + 0.55], dim=1)
    return PretrainBatch(x, x + 0.3 * torch.randn_like(x), boxes1, boxes2)


def one_step(obj, opt, batch: PretrainBatch, device: torch.device, amp: bool) -> dict[str, float]:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else torch.autocast("cpu", enabled=False)
    sync()
    t0 = time.perf_counter()
    with ctx:
        loss, _ = obj(batch)
    fwd = dict(obj.timer.totals)
    opt.zero_grad(set_to_none=True)
    sync()
    tb = time.perf_counter()
    loss.backward()
    sync()
    back = time.perf_counter() - tb
    opt.step()
    sync()
    step = time.perf_counter() - t0
    total = obj.timer.pop()
    solver_bwd = total.get("solver", 0.0) - fwd.get("solver", 0.0)
    return {"encoder": total["encoder"], "affinity": total["affinity"], "solver": total["solver"], "backward": back - solver_bwd, "step": step}


def solver_sweep(graphs: list[int], device: torch.device, reps: int) -> list[list]:
    rows = []
    for g in graphs:
        torch.manual_seed(g)
        tv = torch.randn(g, 16, 16, device=device)
        mask = (torch.rand(g, 16, 1, 16, 1, device=device) < 0.35) & (torch.rand(g, 1, 16, 1, 16, device=device) < 0.35)
        te = torch.randn(g, 16, 16, 16, 16, device=device) * mask
        times = {}
        for name, fn in (("batched", solve_qap), ("loop", solve_qap_loop)):
            fn(tv, te)  # warm-up
            samples = []
            for _ in range(reps):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fn(tv, te)
                fn(tv - 80 * (1 - 2 * torch.eye(16, device=device)), te)  # IMLE's second, perturbed solve
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                samples.append(time.perf_counter() - t0)
            times[name] = statistics.median(samples)
        rows.append([g, f"{times['batched'] * 1e3:.1f}", f"{times['loop'] * 1e3:.1f}", f"{times['loop'] / times['batched']:.2f}x"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="images per step (a multiple of 16)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode (after one warm-up step each)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--graphs", default="1,4,16,64", help="graph counts for the solver-only table")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--modes", default="batched,loop", help="solver modes to time (loop: each graph on the CPU; slow at large batches)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"batched", "loop"}:
        raise SystemExit(f"--modes: batched and/or loop, got {args.modes}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    objs, opts = {}, {}
    for mode in modes:
        enc, _ = create_encoder(args.encoder, seed=0)
        objs[mode] = OBJECTIVES.get("graph-matching")(enc, solver=mode).to(device).train()
        opts[mode] = torch.optim.Adam(objs[mode].parameters(), lr=2e-3)
    batch = make_batch(args.batch_size, args.image_size, device)
    times: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for i in range(args.steps + 1):
        for mode in modes:
            try:
                t = one_step(objs[mode], opts[mode], batch, device, not args.no_amp)
            except torch.OutOfMemoryError:
                raise SystemExit(f"out of memory: {args.encoder} @ {args.image_size}px, batch {args.batch_size} ({mode}); try a smaller --image-size") from None
            if i > 0:
                times[mode].append(t)
    med = {m: {s: statistics.median(t[s] for t in ts) for s in SECTIONS} for m, ts in times.items()}
    rows = []
    for mode in modes:
        r = med[mode]
        rows.append([mode, *(f"{r[s] * 1e3:.0f}" for s in SECTIONS), f"{100 * r['solver'] / r['step']:.0f}%", f"{args.batch_size / r['step']:.1f}"])
    if len(modes) == 2:
        rows.append(["loop / batched", *(f"{med['loop'][s] / med['batched'][s]:.2f}x" for s in SECTIONS), "", ""])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.encoder} @ {args.image_size}px, {args.batch_size} images/step = {args.batch_size // 16} graphs of 16, "
          f"median of {args.steps} steps, {where}")
    print(tabulate(rows, headers=["solver", *(f"{s} ms" for s in SECTIONS), "solver share", "img/s"], tablefmt="github"))
    graphs = [int(g) for g in args.graphs.split(",") if g]
    if not graphs:
        return
    print(f"\nsolver only: forward + IMLE backward solve of G 16-node graphs ({where}, median of 3)")
    print(tabulate(solver_sweep(graphs, device, 3), headers=["graphs", "batched ms", "loop ms", "loop / batched"], tablefmt="github"))


if __name__ == "__main__":
    main()
