"""Training-step throughput of the harness vs a hand-written PyTorch loop, same model/batch/precision.

For each task (fine-tuning, 2D and slice-wise 3D segmentation), in one run:

- harness: the protocol's unit through ``runner.run_unit`` (the code ``lvmbench eval`` runs), with
  the task's own hyperparameters except ``epochs`` and with the splits cut to what ``--steps`` and
  ``--eval-cases`` need. Its result's timings give the training-loop time (data waits included,
  validation excluded), the images trained and the seconds spent waiting for data. The decoded
  cache is filled before timing (a later epoch / a later run; ``benchmarks/data_cache.py`` measures
  the first-epoch decode);
- bare: the same model (same encoder, head or U-Net, optimiser, loss, gradient clipping, batch size,
  crop/flip, autocast) trained for the same number of steps by a plain loop over uint8 tensors
  already in memory: no loader, no bookkeeping — the floor any harness pays.

The bare loop runs twice: with NCHW batches and with channels-last ones (what the harness feeds
the model; "bare CL"). Ratio = harness images/s / bare images/s, and against the faster bare loop
(goal >= 0.9). Bare and harness alternate ``--repeats`` times; medians are reported.

    .venv/bin/python benchmarks/train_throughput.py --encoder resnet18
    .venv/bin/python benchmarks/train_throughput.py --encoder resnet50 --device cuda --amp [--compile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from torch import nn

from lvmbench.data.cache import ArrayCache
from lvmbench.data.datasets import ImageDataset
from lvmbench.data.splits import Split
from lvmbench.data.task_data import TaskData, load_task_data
from lvmbench.encoders import create_encoder
from lvmbench.runner import EvalRequest, Planned, resolve_data_root, run_unit
from lvmbench.spec import RunOptions, RunUnit, TaskSpec
from lvmbench.tasks import get_task

DEFAULT_TASKS = "retinamnist_finetune,kvasir_seg,hippocampus_seg3d"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()


def with_epochs(spec: TaskSpec, proto: str, epochs: int) -> TaskSpec:
    protocols = copy.deepcopy(spec.protocols)
    protocols[proto]["epochs"] = epochs
    return spec.model_copy(update={"protocols": protocols})


def cut(data: TaskData, spec: TaskSpec, n_train: int, n_eval: int) -> TaskData:
    """The task's data with the first ``n_train`` training and ``n_eval`` val/test cases."""
    s = data.split
    split = Split(s.train[:n_train], s.val[:n_eval], s.test[:n_eval], s.origin, list(s.flags), [])
    return replace(data, spec=spec, split=split)


def seg_prep(spec: TaskSpec, proto: str):
    from lvmbench.protocols.seg_data import Prep

    hp, pre = spec.settings(proto), spec.preprocess
    return Prep(pre.size, pre.channels, pre.resize, hp.minmax, getattr(hp, "volume_norm", "med3d"))


def train_cases_needed(spec: TaskSpec, proto: str, data: TaskData, steps: int, cache: ArrayCache) -> int:
    """Training cases giving ``steps`` full batches per epoch (3D: volumes whose balanced slices do)."""
    bs = spec.settings(proto).batch_size
    if proto != "seg3d":
        return min(len(data.split.train), steps * bs)
    from lvmbench.protocols.seg3d import balanced_slices
    from lvmbench.protocols.seg_data import prepare

    hp = spec.settings(proto)
    score = list(hp.score_classes)
    masks = []
    for n, case in enumerate(data.split.train, start=1):
        masks += prepare(data.reader, [case], seg_prep(spec, proto), cache, native=False, volumes=True, progress=False).masks
        chosen, _ = balanced_slices(masks, score, hp.balanced, np.random.default_rng(0))
        if len(chosen) >= steps * bs:
            return n
    return len(data.split.train)


# -- the hand-written loops ---------------------------------------------------------------------


def layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def bare_finetune(spec: TaskSpec, data: TaskData, encoder_name: str, device: torch.device, amp: bool, compile_: bool, steps: int, cache: ArrayCache, channels_last: bool) -> tuple[float, int]:
    hp = spec.settings("finetune")
    pre = spec.preprocess
    bs, crop, hflip = hp.batch_size, hp.crop, hp.augment and hp.hflip
    ds = ImageDataset(data.reader, data.split.train, pre.size, pre.channels, pre.resize, cache)
    images = torch.stack([ds[i][0] for i in range(len(ds))])  # uint8 (N, C, S, S), in memory
    labels = torch.tensor([c.label for c in data.split.train])
    torch.manual_seed(0)
    encoder, _ = create_encoder(encoder_name)
    model = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(encoder.embed_dim, spec.num_classes)}).to(device)
    forward = lambda x: model["head"](model["encoder"].embed(x))  # noqa: E731
    if compile_:
        forward = torch.compile(forward)
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=True)  # as the harness
    mean = torch.tensor(encoder.input_spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(encoder.input_spec.std, device=device).view(1, -1, 1, 1)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(images), (bs,))
        x, y = images[idx].to(device), labels[idx].to(device)
        if crop and crop < x.shape[-1]:
            top, left = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,)))
            x = x[..., top : top + crop, left : left + crop]
        if hflip:
            x = torch.where((torch.rand(bs, device=device) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        x = layout((x.float() / 255.0 - mean) / std, channels_last)
        with autocast(device, amp):
            loss = loss_fn(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0, steps * bs


def bare_seg(spec: TaskSpec, proto: str, data: TaskData, encoder_name: str, device: torch.device, amp: bool, compile_: bool, steps: int, cache: ArrayCache, channels_last: bool) -> tuple[float, int]:
    from monai.losses import DiceCELoss

    from lvmbench.heads.unet import UNet
    from lvmbench.protocols.seg_data import prepare

    hp = spec.settings(proto)
    pre = spec.preprocess
    bs = hp.batch_size
    got = prepare(data.reader, data.split.train, seg_prep(spec, proto), cache, native=False, volumes=proto == "seg3d", progress=False)
    if proto == "seg3d":  # every slice (the harness's balanced subset has about as many)
        images, masks = torch.cat(got.images)[:, None], torch.cat(got.masks)
    else:
        images, masks = torch.stack(got.images), torch.stack(got.masks)
    torch.manual_seed(0)
    encoder, _ = create_encoder(encoder_name)
    model = UNet(encoder, spec.num_classes, in_channels=pre.channels, decoder_channels=hp.decoder_channels).to(device)
    forward = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr, betas=hp.betas, fused=True)  # as the harness
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-6, smooth_dr=1e-6)
    clip = hp.grad_clip
    model.train()
    sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(images), (bs,))
        x = layout(images[idx].to(device).float(), channels_last)  # raw 0-255, as the seg tasks feed it
        y = masks[idx].to(device).long().unsqueeze(1)
        with autocast(device, amp):
            logits = forward(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), float(clip))
        opt.step()
    sync(device)
    return time.perf_counter() - t0, steps * bs


# -- the harness ----------------------------------------------------------------------------------


def warm_decoded_cache(spec: TaskSpec, proto: str, data: TaskData, cache: ArrayCache) -> float:
    """Decode every case the harness will read into the cache (what a first epoch or run does)."""
    t0 = time.perf_counter()
    pre = spec.preprocess
    if proto == "finetune":
        ds = ImageDataset(data.reader, data.split.train + data.split.val + data.split.test, pre.size, pre.channels, pre.resize, cache)
        for i in range(len(ds)):
            ds.array(i)
    else:
        from lvmbench.protocols.seg_data import prepare

        for name in ("train", "val", "test"):
            prepare(data.reader, data.split[name], seg_prep(spec, proto), cache, native=name == "test", volumes=proto == "seg3d", progress=False)
    return time.perf_counter() - t0


def harness(spec: TaskSpec, proto: str, data: TaskData, encoder_name: str, device: torch.device, options: dict, cache_dir: Path) -> dict[str, float]:
    unit = RunUnit(suite="bench", task_id=spec.id, protocol=proto, head="linear", encoder=encoder_name, weights_sha256="random-init", seed=0, label_fraction=1.0)
    req = EvalRequest(encoder=encoder_name, run=RunOptions(device=str(device), progress=False, **options), cache_dir=cache_dir)
    record = run_unit(Planned(unit, spec, spec.settings(proto)), data, req, device, cache_dir, None)
    t = dict(record.timings)
    t["amp"] = float(bool(record.hyperparameters.get("amp", options.get("amp", False))))
    t["compile"] = float(bool(record.hyperparameters.get("compile", False)))
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--suite", default="shared-data")
    ap.add_argument("--tasks", default=DEFAULT_TASKS)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=12, help="training steps per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--eval-cases", type=int, default=8, help="val/test cases kept (validation is not part of the step time)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (harness and bare)")
    ap.add_argument("--workers", type=int, default=None, help="data-loader workers of the harness (default: its own choice)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    options: dict = {"amp": args.amp, "compile": args.compile}
    if args.workers is not None:
        options["workers"] = args.workers
    root = resolve_data_root(EvalRequest(encoder=args.encoder, suite=args.suite, data_root=args.data_root))
    rows = []
    with tempfile.TemporaryDirectory(prefix="lvmbench-train-bench-") as tmp:
        cache_dir = Path(tmp)
        cache = ArrayCache(cache_dir / "decoded")
        for tid in args.tasks.split(","):
            base = get_task(tid).for_suite(args.suite)
            proto = next(p for p in base.default_protocols or [] if p in ("finetune", "seg2d", "seg3d"))
            spec = with_epochs(base, proto, args.epochs)
            full = load_task_data(spec, root, suite=args.suite)
            data = cut(full, spec, train_cases_needed(spec, proto, full, args.steps, cache), args.eval_cases)
            t_warm = warm_decoded_cache(spec, proto, data, cache)
            bare_ips, bare_cl_ips, harn_ips, waits, info = [], [], [], [], {}
            for _ in range(args.repeats):
                t = harness(spec, proto, data, args.encoder, device, options, cache_dir)
                steps = int(t["train_steps"])
                harn_ips.append(t["train_images"] / t["train_loop_s"])
                waits.append(t["data_wait_s"] / t["train_loop_s"])
                info = t
                bare = bare_finetune if proto == "finetune" else lambda *a: bare_seg(spec, proto, *a[1:])
                for channels_last, out in ((False, bare_ips), (True, bare_cl_ips)):
                    secs, n = bare(spec, data, args.encoder, device, args.amp, args.compile, steps, cache, channels_last)
                    out.append(n / secs)
            h, b, bcl = statistics.median(harn_ips), statistics.median(bare_ips), statistics.median(bare_cl_ips)
            bs = spec.settings(proto).batch_size
            rows.append([
                f"{tid} ({proto})", f"{spec.preprocess.size}px b{bs}", int(info["train_steps"]), f"{b:.1f}", f"{bcl:.1f}", f"{h:.1f}", f"{h / b:.2f}", f"{h / max(b, bcl):.2f}",
                f"{100 * statistics.median(waits):.1f}%", f"{info.get('val_s', 0.0):.1f}", f"{t_warm:.1f}",
            ])
    print(
        f"encoder={args.encoder} suite={args.suite} device={device} amp={args.amp} compile={args.compile} "
        f"threads={torch.get_num_threads()} epochs={args.epochs} repeats={args.repeats}"
    )
    print(tabulate(rows, headers=["task", "input", "steps", "bare img/s", "bare CL img/s", "harness img/s", "ratio", "ratio vs best bare", "data wait", "val s", "cache fill s"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
