"""``lvmbench eval`` and ``lvmbench status``: run a grid of units, look at it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lvmbench.cli.groups import app
from lvmbench.cli.groups import csv_list as _csv
from lvmbench.errors import UserError
from lvmbench.spec import RunOptions


@app.command("eval")
def eval_cmd(
    encoder: Annotated[str, typer.Option(help="timm/torchvision name, lvmmed-r50, lvmmed-vitb or a plugin")],
    weights: Annotated[Optional[Path], typer.Option(help="checkpoint (.pth/.pt/.torch state_dict or .safetensors); none = random-init")] = None,
    pretrained: Annotated[bool, typer.Option(help="the encoder's released weights, from the local Hugging Face / torch hub cache (never downloaded; see `lvmbench encoders`)")] = False,
    suite: Annotated[str, typer.Option(help="lvmmed (real data) | smoke (synthetic) | shared-data")] = "lvmmed",
    tasks: Annotated[Optional[str], typer.Option(help="comma-separated task ids (default: the whole suite)")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="comma-separated protocols (default: each task's own)")] = None,
    head: Annotated[Optional[str], typer.Option(help="comma-separated heads for head protocols: linear, mlp, tversky")] = None,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0",
    label_fraction: Annotated[str, typer.Option(help="comma-separated training-label fractions, e.g. 0.01,0.1,1.0")] = "1.0",
    data_root: Annotated[Optional[Path], typer.Option(help="folder holding the datasets (default: $LVMBENCH_DATA)")] = None,
    results: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    shard: Annotated[Optional[str], typer.Option(help="i/n: run every n-th unit starting at i")] = None,
    overwrite: Annotated[bool, typer.Option(help="recompute units that already have results")] = False,
    keep_stale: Annotated[bool, typer.Option(help="keep finished results whose split, spec, code or data changed since they ran (default: recompute them)")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 (default: cuda if available)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="decoded-image and feature cache (default: $LVMBENCH_CACHE or ~/.cache/lvmbench)")] = None,
    amp: Annotated[bool, typer.Option(help="bf16 autocast on CUDA")] = False,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile fine-tuned and segmentation models")] = False,
    workers: Annotated[Optional[int], typer.Option(help="data-loader workers")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch intra-op threads (default: torch's own choice; recorded in each result)")] = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    deterministic: Annotated[bool, typer.Option(help="deterministic torch kernels (slower on GPU; CPU runs are deterministic already)")] = False,
    decoder_weights: Annotated[Optional[Path], typer.Option(help="prompt protocols: SAM-layout checkpoint of the prompt encoder + mask decoder (e.g. sam_vit_b_01ec64.pth); none = random init")] = None,
    # launchers (issue 16): lvmbench/launch/
    launcher: Annotated[str, typer.Option(help="where units run: none (this process), local (--jobs worker processes), slurm (a job array via submitit)", rich_help_panel="Launch")] = "none",
    jobs: Annotated[Optional[int], typer.Option(help="local: worker processes (CPU: the cores are divided among them)", rich_help_panel="Launch")] = None,
    devices: Annotated[Optional[str], typer.Option(help="local: GPU indices, one per worker, e.g. 0,1,2,3", rich_help_panel="Launch")] = None,
    bundle: Annotated[Optional[int], typer.Option(help="local/slurm: short feature-based units run together (one job start), at most this many (default 8)", rich_help_panel="Launch")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the units left to run (slurm: and the sbatch script) without running or submitting", rich_help_panel="Launch")] = False,
    partition: Annotated[Optional[str], typer.Option(help="slurm: --partition", rich_help_panel="Slurm")] = None,
    account: Annotated[Optional[str], typer.Option(help="slurm: --account", rich_help_panel="Slurm")] = None,
    gpus_per_task: Annotated[Optional[int], typer.Option(help="slurm: GPUs per array task (default 0)", rich_help_panel="Slurm")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(help="slurm: CPUs per array task", rich_help_panel="Slurm")] = None,
    mem_gb: Annotated[Optional[float], typer.Option(help="slurm: memory per array task, GB", rich_help_panel="Slurm")] = None,
    time: Annotated[Optional[str], typer.Option(help="slurm: time limit per array task: minutes, HH:MM:SS or D-HH:MM (default 240 min); a unit still running is requeued", rich_help_panel="Slurm")] = None,
    max_parallel: Annotated[Optional[int], typer.Option(help="slurm: array tasks running at once (default 256)", rich_help_panel="Slurm")] = None,
    sbatch: Annotated[Optional[list[str]], typer.Option(help="slurm: extra sbatch flag KEY=VALUE (repeatable), e.g. --sbatch qos=high", rich_help_panel="Slurm")] = None,
    max_requeue: Annotated[Optional[int], typer.Option(help="slurm: requeues after a time-out (default 3; preemptions always requeue)", rich_help_panel="Slurm")] = None,
    wait: Annotated[bool, typer.Option(help="slurm: wait for the array and print the summary", rich_help_panel="Slurm")] = False,
) -> None:
    """Evaluate one encoder on a suite (or some tasks); finished units are skipped."""
    from lvmbench.runner import BASELINE_MARGIN, EvalRequest, parse_shard, skipped_line

    for name, value in (("--tasks", tasks), ("--protocol", protocol), ("--head", head), ("--seeds", seeds), ("--label-fraction", label_fraction)):
        if value is not None and not _csv(value):
            raise UserError(f"{name} is empty", fix=f"name at least one value, or leave {name} out (an unset shell variable expands to nothing)")
    seed_list, fractions = seeds_and_fractions(seeds, label_fraction)
    if workers is not None and not 0 <= workers <= 64:
        raise UserError(f"--workers {workers} is not in 0 .. 64", fix="e.g. --workers 4 (0 = load data in the main process)")
    check_device(device)
    if threads is not None and not 1 <= threads <= 1024:
        raise UserError(f"--threads {threads} is not in 1 .. 1024", fix="e.g. --threads 8 (default: torch's own choice)")
    run = RunOptions(device=device, amp=amp, compile=compile, deterministic=deterministic, workers=workers, threads=threads, progress=progress)
    req = EvalRequest(
        encoder=encoder,
        weights=weights,
        suite=suite,
        tasks=_csv(tasks),
        protocols=_csv(protocol),
        heads=_csv(head),
        seeds=seed_list,
        fractions=fractions,
        data_root=data_root,  # as typed: LVMBENCH_DATA applies to real-data suites only (resolve_data_root)
        results=results,
        shard=parse_shard(shard),
        overwrite=overwrite,
        keep_stale=keep_stale,
        cache_dir=cache_dir,
        run=run,
        decoder_weights=decoder_weights,
    )
    summary = None
    launch_options = (jobs, devices, bundle, partition, account, gpus_per_task, cpus_per_task, mem_gb, time, max_parallel, sbatch, max_requeue)
    if launcher == "none" and not dry_run and not pretrained and not wait and all(v is None for v in launch_options):
        from lvmbench.runner.quick import all_done  # no torch: a finished grid answers at once

        summary = all_done(req)  # None: something to run or say, or an encoder fact not cached yet
        if summary is not None:
            for line in summary.unavailable:
                print(f"skip  {line}", file=sys.stderr)
            print(skipped_line(summary), file=sys.stderr)
    if summary is None:
        from lvmbench.encoders.pretrained import released_weights
        from lvmbench.launch import launch_eval
        from lvmbench.launch.options import parse_pairs, parse_time

        req.weights = released_weights(encoder, weights, pretrained)  # --pretrained / a preset: the cached release file
        slurm = {"partition": partition, "account": account, "gpus_per_task": gpus_per_task, "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
                 "time_min": parse_time(time), "max_parallel": max_parallel, "sbatch": parse_pairs(sbatch, "--sbatch") or None, "max_requeue": max_requeue, "wait": wait or None}
        summary = launch_eval(req, launcher, jobs=jobs, devices=devices, bundle=bundle, dry_run=dry_run, slurm={k: v for k, v in slurm.items() if v is not None})
    if summary is None:  # a dry run, or a job array left running
        return
    kept = f", {len(summary.stale)} stale kept" if keep_stale and summary.stale else ""
    print(
        f"{len(summary.done)} done, {len(summary.skipped)} skipped (already done){kept}, {len(summary.busy)} busy, "
        f"{len(summary.failed)} failed, {len(summary.unavailable)} not available; results in {results}",
        file=sys.stderr,
    )
    if summary.interrupted:
        print(f"interrupted: {len(summary.done)} unit(s) finished in this run are saved; rerun the same command to resume", file=sys.stderr)
        raise typer.Exit(130)
    if summary.below_baseline:
        print(f"not above baseline (+{BASELINE_MARGIN}): {len(summary.below_baseline)} unit(s): {'; '.join(summary.below_baseline)}", file=sys.stderr)
    if summary.failed or summary.below_baseline:
        raise typer.Exit(1)


def describe_suites(command) -> None:
    """``eval --help``: the ``--suite`` option names every suite, plugins' and task files' included
    (read from the task files without importing torch)."""
    from lvmbench.task_files import declared_suites, parsed_tasks

    try:
        suites = declared_suites(parsed_tasks())
    except UserError:  # a broken plugin: `lvmbench suites` names it; help still shows the built-in ones
        return
    where = {"lvmbench": "", "tasks": " (task files)"}
    listed = " | ".join(f"{name}{where.get(s.declared_by, f' ({s.declared_by})')}" for name, s in suites.items())
    option = next(p for p in command.commands["eval"].params if p.name == "suite")
    option.help = f"{listed} (`lvmbench suites` describes each)"


def seeds_and_fractions(seeds: str, label_fraction: str) -> tuple[list[int], list[float]]:
    """``--seeds`` and ``--label-fraction`` as numbers in their ranges (one line for a bad one)."""
    try:
        seed_list = [int(s) for s in _csv(seeds) or ["0"]]
        fractions = [float(f) for f in _csv(label_fraction) or ["1.0"]]
    except ValueError:
        raise UserError("--seeds must be integers and --label-fraction numbers", fix="e.g. --seeds 0,1,2 --label-fraction 0.1,1.0") from None
    if any(not 0 <= s < 2**31 for s in seed_list):
        raise UserError(f"--seeds {seeds}: seeds must be in 0 .. {2**31 - 1}", fix="e.g. --seeds 0,1,2")
    if any(not 0 < f <= 1 for f in fractions):
        raise UserError("--label-fraction values must be in (0, 1]", fix="e.g. --label-fraction 0.01,0.1,1.0")
    return seed_list, fractions


def check_device(name: str | None) -> None:
    """``--device`` names a device torch knows and this machine has (one line, not a traceback)."""
    if name is None:
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device '{name}' is not a device name", fix="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this machine has no usable CUDA device", fix="leave --device out (CPU), or run on a machine with a GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here", fix=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type not in ("cpu", "mps"):
        raise UserError(f"--device '{name}' is not supported", fix="use cpu, cuda or cuda:N")


@app.command("status")
def status_cmd(
    results: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    suite: Annotated[Optional[str], typer.Option(help="only this suite (with --encoder: the suite whose plan is shown)")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="the encoder whose plan to show: adds the units still missing")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="with --encoder: its checkpoint (names its results folder)")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="with --encoder: comma-separated task ids of the plan")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="with --encoder: comma-separated protocols of the plan")] = None,
    head: Annotated[Optional[str], typer.Option(help="with --encoder: comma-separated heads of the plan")] = None,
    seeds: Annotated[str, typer.Option(help="with --encoder: seeds of the plan")] = "0",
    label_fraction: Annotated[str, typer.Option(help="with --encoder: label fractions of the plan")] = "1.0",
    data_root: Annotated[Optional[Path], typer.Option(help="datasets, to check that finished results are still current (default: as eval)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache holding the smoke suite's data (default: as eval)")] = None,
    check: Annotated[bool, typer.Option(help="check each result's identity against its data (--no-check: faster, results shown as unchecked)")] = True,
    clear_stale: Annotated[bool, typer.Option(help="remove claims whose process is gone (lvmbench's own lock files only)")] = False,
) -> None:
    """The grid at a glance: per encoder x task, done / stale / running / failed / missing."""
    from lvmbench.launch.status import clear_stale as clear
    from lvmbench.launch.status import collect, report
    from lvmbench.runner import EvalRequest

    if suite and not (results / suite).is_dir():  # a typo would otherwise print an empty grid
        from lvmbench.suites import get_suite

        get_suite(suite)
    req = None
    if encoder:
        seed_list, fractions = seeds_and_fractions(seeds, label_fraction)
        req = EvalRequest(encoder=encoder, weights=weights, suite=suite or "lvmmed", tasks=_csv(tasks), protocols=_csv(protocol), heads=_csv(head),
                          seeds=seed_list, fractions=fractions, data_root=data_root, results=results, cache_dir=cache_dir)
    elif weights or tasks or protocol or head:
        raise UserError("--weights, --tasks, --protocol and --head describe a plan and need --encoder", fix="add --encoder NAME, or drop them to see what exists")
    grid = collect(results, suite or (req.suite if req else None), req, check=check, data_root=data_root, cache_dir=cache_dir)
    if clear_stale:
        clear(grid)
    print(report(grid, results, clear_stale), end="")
