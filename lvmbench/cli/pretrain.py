"""``lvmbench pretrain``: self-supervised pretraining of any registered encoder.

Runs the same alone or under torchrun (``torchrun --nproc_per_node 8 -m lvmbench.cli pretrain ...``);
``--batch-size`` is the global batch over all processes. Nothing heavy is imported at module level:
``lvmbench --help`` must stay fast.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from lvmbench.cli.evaluate import check_device
from lvmbench.errors import UserError

OPTION_HELP = (
    "objective option KEY=VALUE (repeatable; VALUE parsed as JSON when it can be). graph-matching: "
    "graph_size=16 knn=5 alpha=0.8 gamma=20 lam=80 noise_scale=1 margin=0.2 solver=batched|loop, "
    "ablations (paper Table 6): second_order=false message_passing=false gumbel=false local=false; "
    "gcn_residual=true (ẑ = z + g(z), not in the paper), solver_options={...}; mlvicx: proj_hidden=4096 proj_out=4096 "
    "local_size=64 (at most the view size) local_pool=4 lambda_local=1; vicreg: proj_hidden=2048 proj_out=2048 "
    "sim_coeff=25 std_coeff=25 cov_coeff=1; simclr: proj_dim=128 temperature=0.2. Typed and bounded: "
    "a bad key or value is one line"
)


def parse_options(pairs: list[str] | None, flag: str = "-o") -> dict:
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            example = "e.g. --view jitter_p=0.3" if flag == "--view" else "e.g. -o second_order=false -o lam=80"
            raise UserError(f"{flag} '{pair}' is not KEY=VALUE", fix=example)
        if key.strip() in out:  # the later one would silently win over the earlier
            raise UserError(f"{flag} {key.strip()} is given twice ('{pair}')", fix="give each key once")
        text = value.strip()
        lowered = {"true": "true", "false": "false", "none": "null"}.get(text.lower(), text)
        try:
            out[key.strip()] = json.loads(lowered)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def pretrain_cmd(
    action: Annotated[Optional[list[str]], typer.Argument(help="`plot RUN [PNG]`: draw RUN/metrics.jsonl (default RUN/metrics.png) instead of training", show_default=False)] = None,
    data: Annotated[Optional[list[str]], typer.Option(help="image folder (recursive: PNG/JPEG/TIFF/DICOM/NIfTI slices, MedMNIST .npz) or WebDataset .tar shards (path, glob or {000..009} pattern); repeatable")] = None,
    objective: Annotated[str, typer.Option(help="pretraining objective (graph-matching = LVM-Med, mlvicx, vicreg, simclr)")] = "graph-matching",
    encoder: Annotated[str, typer.Option(help="encoder name as for `lvmbench eval` (resnet50, resnet18, a timm ViT ...)")] = "resnet50",
    weights: Annotated[Optional[Path], typer.Option(help="initial weights (the paper starts R50 from ImageNet); none = random init")] = None,
    pooling: Annotated[str, typer.Option(help="pooled vector the objective trains, recorded in the checkpoint for eval: avg (the paper: average of the last feature map, a ViT's token grid) or head (timm's head, e.g. a ViT's class token)")] = "avg",
    image_size: Annotated[int, typer.Option(help="view size in pixels")] = 224,
    batch_size: Annotated[int, typer.Option(help="images per step over all processes (paper: 3200); a multiple of the graph size")] = 256,
    steps: Annotated[Optional[int], typer.Option(help="optimiser steps (or give --epochs)")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="passes over the data (the paper: 100)")] = None,
    out: Annotated[Path, typer.Option(help="output folder: encoder.safetensors, pretrain.json, checkpoint.pt, log.jsonl")] = Path("pretrain-out"),
    resume: Annotated[bool, typer.Option(help="continue the run in --out exactly where its checkpoint left it")] = False,
    lr: Annotated[float, typer.Option(help="Adam learning rate, halved four times over the run")] = 2e-3,
    seed: Annotated[int, typer.Option(help="seed for initialisation, data order, views and noise")] = 0,
    exclude: Annotated[Optional[list[str]], typer.Option(help="glob of files to skip, e.g. '*_mask*' (repeatable)")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help=OPTION_HELP)] = None,
    view: Annotated[Optional[list[str]], typer.Option(help="augmentation of the two views KEY=VALUE (repeatable): scale ratio flip_p jitter_p brightness contrast saturation hue gray_p blur_p blur_sigma solarize_p; pairs as JSON, e.g. --view jitter_p=0.3 --view 'scale=[0.5, 1]'")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="save a resumable checkpoint every N steps")] = 500,
    stop_at: Annotated[Optional[int], typer.Option(help="stop after this step (e.g. a job's time slice); --resume continues")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="stop after the step that passes this many minutes of wall time (a time-capped run); --resume continues")] = None,
    workers: Annotated[int, typer.Option(help="data-loader worker processes per training process")] = 4,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 (default: this process's GPU if any)")] = None,
    amp: Annotated[bool, typer.Option(help="bf16 autocast on CUDA")] = True,
    cache_mb: Annotated[int, typer.Option(help="decoded-image cache per loader worker (MiB)")] = 512,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
    exclude_test_of: Annotated[Optional[list[str]], typer.Option(help="drop every test image (test splits and OOD test sets) of this suite's tasks, by name, sha256 and (array rows) pixels; repeatable; 'none' = off. Default: every built-in suite whose data root holds a --data folder (shared-data for ../shared/data)")] = None,
    exclude_data_root: Annotated[Optional[Path], typer.Option(help="data root of the --exclude-test-of suites (default: each suite's own: --data-root rules)")] = None,
    monitor_task: Annotated[Optional[list[str]], typer.Option(help="classification task for the online kNN monitor (its train split = bank, validation split = queries, never test); repeatable")] = None,
    monitor_every: Annotated[Optional[int], typer.Option(help="monitor interval in steps (default: 20 reports per run)")] = None,
    monitor_suite: Annotated[Optional[str], typer.Option(help="suite profile of the monitor tasks (default: the one --exclude-test-of suite, else lvmmed)")] = None,
    monitor_data_root: Annotated[Optional[Path], typer.Option(help="data root of the monitor tasks (default: the suite's own)")] = None,
    monitor_size: Annotated[Optional[int], typer.Option(help="image size of the monitor's embeddings (default: --image-size)")] = None,
    monitor_k: Annotated[int, typer.Option(help="neighbours of the kNN monitor")] = 20,
) -> None:
    """Pretrain an encoder without labels; writes OUT/encoder.safetensors for `lvmbench eval --weights`.
    `lvmbench pretrain plot RUN` draws a run's monitors."""
    if action:
        return plot_action(action)
    from lvmbench.pretrain.trainer import PretrainConfig, train
    from lvmbench.pretrain.views import view_config

    if not data:
        raise UserError("give --data (a folder of images or .tar shards)", fix="e.g. lvmbench pretrain --data ../shared/data --steps 1000 --out runs/r18")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise UserError(f"--max-minutes must be a positive number of minutes, got {max_minutes}")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be a positive number, got {lr}", fix="e.g. --lr 2e-3 (the default)")
    if not 0 <= seed <= 4_000_000:  # process p seeds numpy with seed * 1000 + p, which must stay below 2**32
        raise UserError(f"--seed must be in 0 .. 4000000, got {seed}")
    if workers < 0 or cache_mb < 0 or (stop_at is not None and stop_at < 1):
        raise UserError("--workers and --cache-mb must be ≥ 0, --stop-at ≥ 1", fix="--workers 0 loads in the training process; --cache-mb 0 turns the decoded-image cache off")
    if (monitor_every is not None and monitor_every < 1) or monitor_k < 1 or (monitor_size is not None and not 16 <= monitor_size <= 1024):
        raise UserError("--monitor-every and --monitor-k must be ≥ 1, --monitor-size 16 .. 1024")
    check_device(device)
    view_options = parse_options(view, "--view")
    view_config(image_size, view_options)  # a bad key or value: one line before any data is read
    suites = None if exclude_test_of is None else [s for s in exclude_test_of if s.lower() != "none"]

    if (steps is None) == (epochs is None):
        raise UserError("give exactly one of --steps and --epochs", fix="e.g. --epochs 100 or --steps 5000")
    if (steps is not None and steps <= 0) or (epochs is not None and not (math.isfinite(epochs) and epochs > 0)):
        raise UserError("--steps/--epochs must be positive")
    if image_size < 16 or batch_size < 1 or checkpoint_every < 1:
        raise UserError("--image-size must be ≥ 16, --batch-size and --checkpoint-every ≥ 1")
    cfg = PretrainConfig(
        data=[str(d) for d in data],
        objective=objective,
        encoder=encoder,
        weights=str(weights) if weights else None,
        pooling=pooling,
        image_size=image_size,
        batch_size=batch_size,
        steps=steps,
        epochs=epochs,
        lr=lr,
        out=str(out),
        resume=resume,
        seed=seed,
        exclude=list(exclude or []),
        objective_options=parse_options(option),
        view_options=view_options,
        checkpoint_every=checkpoint_every,
        stop_at=stop_at,
        max_minutes=max_minutes,
        workers=workers,
        device=device,
        amp=amp,
        cache_mb=cache_mb,
        progress=progress,
        exclude_test_of=suites,
        exclude_data_root=str(exclude_data_root) if exclude_data_root else None,
        monitor_tasks=list(monitor_task or []),
        monitor_every=monitor_every,
        monitor_suite=monitor_suite,
        monitor_data_root=str(monitor_data_root) if monitor_data_root else None,
        monitor_size=monitor_size,
        monitor_k=monitor_k,
    )
    path = train(cfg)

    if int(os.environ.get("RANK", 0)) == 0:
        typer.echo(f"wrote {path}; evaluate with: lvmbench eval --encoder {encoder} --weights {path}", err=True)


def plot_action(args: list[str]) -> None:
    """``lvmbench pretrain plot RUN [PNG]``."""
    if args[0] != "plot" or len(args) not in (2, 3):
        raise UserError(f"unknown pretrain action '{' '.join(args)}'", fix="`lvmbench pretrain plot RUN [PNG]`, or options only to train (--data ...)")
    from lvmbench.pretrain.monitors.plot import plot_run

    run = Path(args[1])
    out = plot_run(run, Path(args[2]) if len(args) == 3 else None)
    typer.echo(f"wrote {out}", err=True)
