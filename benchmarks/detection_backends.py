"""Training-step time of the two detection backends on the same encoder, images, boxes and batch.

Both detectors are built in this process around copies of one encoder (same weights) with the
same settings (mmdet's faster-rcnn_r50_fpn sizes unless overridden) and the paper's freezing; the
steps alternate torchvision / mmdet so both see the same machine load. Prints a table of median
step times (forward + backward + Adam step) and inference times per batch.

    .venv/bin/python benchmarks/detection_backends.py --encoder resnet50 --size 256 --batch 2 --steps 6
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from tabulate import tabulate

from lvmbench.encoders import create_encoder
from lvmbench.protocols.det import BACKENDS
from lvmbench.protocols.settings import DetectionSettings


def synthetic_batch(size: int, batch: int, gen: torch.Generator) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.randn(3, size, size, generator=gen))
        xy = torch.rand(4, 2, generator=gen) * size * 0.6
        wh = torch.rand(4, 2, generator=gen) * size * 0.3 + size * 0.05
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 3, (4,), generator=gen)})
    return images, targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="resnet50")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--hp", default="{}", help='detector size overrides as JSON, e.g. {"fpn_channels": 64}')
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    enc, _ = create_encoder(args.encoder, seed=0)
    names = [n for n in ("torchvision", "mmdet") if not BACKENDS.get(n).unavailable()]
    hp = DetectionSettings.model_validate({"anchor_scale": 8.0, **json.loads(args.hp)})
    runs = {}
    for n in names:
        be = BACKENDS.get(n)()
        model = be.build(copy.deepcopy(enc), 3, hp).to(device)
        be.body(model).freeze(1, True)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        runs[n] = (be, model, opt, [], [])
    gen = torch.Generator().manual_seed(0)
    images, targets = synthetic_batch(args.size, args.batch, gen)
    images = [x.to(device) for x in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for step in range(args.steps + 1):  # step 0 warms up (allocations, lazy imports)
        for n, (be, model, opt, train_t, _) in runs.items():
            model.train()
            sync()
            t = time.perf_counter()
            loss = sum(be.losses(model, images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            if step:
                train_t.append(time.perf_counter() - t)
    for step in range(3):
        for n, (be, model, _, _, infer_t) in runs.items():
            model.eval()
            sync()
            t = time.perf_counter()
            with torch.no_grad():
                be.predict(model, images)
            sync()
            if step:
                infer_t.append(time.perf_counter() - t)
    rows = [[n, f"{statistics.median(r[3]):.3f}", f"{min(r[3]):.3f}", f"{statistics.median(r[4]):.3f}"] for n, r in runs.items()]
    print(f"{args.encoder}, {args.size}x{args.size}, batch {args.batch}, {args.steps} alternating steps, device {device}, {args.threads} threads, sizes {hp}")
    print(tabulate(rows, headers=["backend", "train step s (median)", "train step s (min)", "predict s (median)"]))
    missing = [n for n in ("torchvision", "mmdet") if n not in runs]
    if missing:
        print(f"not measured (unavailable here): {', '.join(missing)}")


if __name__ == "__main__":
    main()
