"""Detection: the harness's training step and inference vs a bare torchvision Faster R-CNN loop.

In one run, on the same task images, model, batch size and device:

- harness: the detection protocol's unit through ``runner.run_unit`` (what ``lvmbench eval`` runs)
  for ``--epochs`` epochs, the decoded cache warm (a later epoch or run). Training step time =
  its ``train_s / train_steps`` (the training loops: data loading, flips, box conversion, losses,
  backward, Adam; validation excluded); inference = its ``test_predict_s`` (the test split through
  its loader, normalisation, the detector and the rescaling of boxes to native size) per test image,
  and, reported beside it, ``test_score_s`` (pycocotools' COCO metrics, which the bare loop skips);
- bare: the same detector (same backend, encoder weights, sizes, freezing, optimiser, gradient
  clipping) driven by a plain loop over the same resized, normalised images already on the device:
  random batches with flips, ``sum(model(images, targets).values())``, backward, step; inference is
  ``model(images)`` over the test images in batches. No loader, no bookkeeping, no metric.

Ratio = bare time / harness time (1.0 = the harness adds nothing; goal >= 0.95). Harness and bare
alternate ``--repeats`` times; medians are reported.

    .venv/bin/python benchmarks/detection_overhead.py --task bccd_det --suite smoke --encoder resnet18
    .venv/bin/python benchmarks/detection_overhead.py --task kvasir_det --suite shared-data --encoder resnet50 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

from lvmbench.data.cache import ArrayCache
from lvmbench.data.splits import Split
from lvmbench.data.task_data import load_task_data
from lvmbench.data.transforms import normalize_batch
from lvmbench.encoders import create_encoder
from lvmbench.protocols.base import RunContext
from lvmbench.protocols.det import get_backend
from lvmbench.protocols.det.data import DetectionDataset, Resize
from lvmbench.runner import EvalRequest, Planned, resolve_data_root, run_unit
from lvmbench.spec import RunOptions, RunUnit
from lvmbench.tasks import get_task

FUSED = True  # the harness's Adam uses the fused kernel on CPU and CUDA (protocols/schedule.py)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def preload(ds: DetectionDataset, norm, device: torch.device) -> list[dict]:
    """Every sample resized, normalised and on the device, before any timing."""
    out = []
    for i in range(len(ds)):
        s = ds[i]
        x = normalize_batch(s["image"][None].to(device), norm)[0]
        out.append({"image": x, "boxes": s["boxes"].to(device), "labels": s["labels"].to(device) + 1})
    return out


def bare(ctx: RunContext, train: list[dict], test: list[dict], steps: int, seed: int) -> tuple[float, float]:
    """Seconds for ``steps`` training steps and for inference over ``test``."""
    hp = ctx.settings
    backend = get_backend(hp.backend)
    torch.manual_seed(seed)
    model = backend.build(ctx.make_encoder(), len(ctx.task.classes), hp).to(ctx.device)
    backend.body(model).freeze(hp.frozen_stages, hp.norm_eval)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=FUSED)  # the harness's optimiser
    gen = torch.Generator().manual_seed(seed)
    bs = hp.batch_size
    model.train()
    sync(ctx.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(train), (bs,), generator=gen).tolist()
        flips = (torch.rand(bs, generator=gen) < 0.5).tolist()
        images, targets = [], []
        for i, f in zip(idx, flips):
            s = train[i]
            x, b = s["image"], s["boxes"]
            if f:
                w = x.shape[-1]
                x, b = x.flip(-1), torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
            images.append(x)
            targets.append({"boxes": b, "labels": s["labels"]})
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if hp.grad_clip:
            nn.utils.clip_grad_norm_(params, hp.grad_clip)
        opt.step()
    sync(ctx.device)
    t_train = time.perf_counter() - t0
    model.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(test), bs):
            model([s["image"] for s in test[i : i + bs]])
    sync(ctx.device)
    return t_train, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--task", default="bccd_det")
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-cases", type=int, default=None, help="cut the training split (default: all)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    spec = get_task(args.task).for_suite(args.suite)
    protocols = copy.deepcopy(spec.protocols)
    protocols["detection"]["epochs"] = args.epochs
    spec = spec.model_copy(update={"protocols": protocols})
    settings = spec.settings("detection")
    root = resolve_data_root(EvalRequest(encoder=args.encoder, suite=args.suite, data_root=args.data_root))
    data = load_task_data(spec, root, suite=args.suite)
    if args.train_cases:
        s = data.split
        data = replace(data, split=Split(s.train[: args.train_cases], s.val, s.test, s.origin, list(s.flags), []))
    options = {"workers": args.workers} if args.workers is not None else {}
    enc, ident = create_encoder(args.encoder, seed=0)
    unit = RunUnit(suite="bench", task_id=spec.id, protocol="detection", encoder=args.encoder, weights_sha256=ident.weights_sha256)
    rows_h, rows_b = [], []
    with tempfile.TemporaryDirectory(prefix="lvmbench-det-bench-") as tmp:
        cache_dir = Path(tmp)
        ctx = RunContext(unit=unit, task=spec, data=data, encoder_identity=ident, make_encoder=lambda: copy.deepcopy(enc), settings=settings,
                         device=device, cache_dir=cache_dir, run=RunOptions(progress=False, **options))
        resize = Resize(settings.resize, spec.preprocess.size)
        norm = ctx.input_norm(enc.input_spec)
        cache = ArrayCache(cache_dir / "decoded")
        train = preload(DetectionDataset(data.reader, data.split.train, resize, spec.preprocess.channels, cache), norm, device)
        test = preload(DetectionDataset(data.reader, data.split.test, resize, spec.preprocess.channels, cache), norm, device)
        req = EvalRequest(encoder=args.encoder, run=RunOptions(device=str(device), progress=False, **options), cache_dir=cache_dir)
        for r in range(args.repeats):
            rec = run_unit(Planned(unit, spec, settings), data, req, device, cache_dir, None)
            steps = int(rec.timings["train_s"] / rec.timings["train_step_s"] + 0.5)
            rows_h.append((rec.timings["train_step_s"], rec.timings["test_predict_s"] / max(1, len(test)), rec.timings["test_score_s"]))
            t_train, t_test = bare(ctx, train, test, steps, seed=r)
            rows_b.append((t_train / steps, t_test / max(1, len(test))))
    h_step, h_inf, h_score = (statistics.median(v) for v in zip(*rows_h))
    b_step, b_inf = (statistics.median(v) for v in zip(*rows_b))
    print(f"{spec.id} ({args.suite}), {args.encoder}, {spec.preprocess.size} px, batch {settings.batch_size}, {steps} steps x {args.repeats} repeats, {device}, {torch.get_num_threads()} threads")
    print(tabulate(
        [
            ["training step (s)", f"{b_step:.3f}", f"{h_step:.3f}", f"{b_step / h_step:.2f}"],
            ["inference per test image (s)", f"{b_inf:.4f}", f"{h_inf:.4f}", f"{b_inf / h_inf:.2f}"],
            [f"COCO scoring of the {len(test)} test images (s)", "–", f"{h_score:.3f}", "–"],
        ],
        headers=["", "bare loop", "harness", "ratio bare/harness"],
        tablefmt="github",
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
