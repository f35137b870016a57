"""Command line: ``lvmbench eval | tasks | encoders | leaderboard | data ...``.

User errors (bad data, bad checkpoint, unknown names) print one line and exit with status 2;
only bugs show a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from lvmbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Synthetic data, verification, splits.")
app.add_typer(data_app, name="data")
app.command("pretrain")(__import__("lvmbench.pretrain.cli", fromlist=["pretrain_cmd"]).pretrain_cmd)  # lvmbench pretrain (issue 6)


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


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
    from lvmbench.runner import BASELINE_MARGIN, EvalRequest, parse_shard

    for name, value in (("--tasks", tasks), ("--protocol", protocol), ("--head", head), ("--seeds", seeds), ("--label-fraction", label_fraction)):
        if value is not None and not _csv(value):
            raise UserError(f"{name} is empty", fix=f"name at least one value, or leave {name} out (an unset shell variable expands to nothing)")
    try:
        seed_list = [int(s) for s in _csv(seeds) or ["0"]]
        fractions = [float(f) for f in _csv(label_fraction) or ["1.0"]]
    except ValueError:
        raise UserError("--seeds must be integers and --label-fraction numbers", fix="e.g. --seeds 0,1,2 --label-fraction 0.1,1.0") from None
    if any(not 0 <= s < 2**31 for s in seed_list):
        raise UserError(f"--seeds {seeds}: seeds must be in 0 .. {2**31 - 1}", fix="e.g. --seeds 0,1,2")
    if any(not 0 < f <= 1 for f in fractions):
        raise UserError("--label-fraction values must be in (0, 1]", fix="e.g. --label-fraction 0.01,0.1,1.0")
    if workers is not None and not 0 <= workers <= 64:
        raise UserError(f"--workers {workers} is not in 0 .. 64", fix="e.g. --workers 4 (0 = load data in the main process)")
    check_device(device)
    from lvmbench.encoders.pretrained import released_weights

    weights = released_weights(encoder, weights, pretrained)  # --pretrained / a preset: the cached release file
    options = {"amp": amp, "compile": compile}
    if deterministic:
        options["deterministic"] = True
    if workers is not None:
        options["workers"] = workers
    if decoder_weights is not None:
        options["decoder_weights"] = str(decoder_weights)
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
        device=device,
        cache_dir=cache_dir,
        progress=progress,
        options=options,
    )
    from lvmbench.launch import launch_eval
    from lvmbench.launch.options import parse_pairs, parse_time

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


@app.command("tasks")
def tasks_cmd(
    suite: Annotated[Optional[str], typer.Option(help="only tasks of this suite")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="check data presence under this folder")] = None,
) -> None:
    """List tasks: id, family, dims, metric, protocols, data status."""
    from lvmbench.paths import data_root as default_data_root
    from lvmbench.protocols.base import PROTOCOLS
    from lvmbench.suites import get_suite
    from lvmbench.tasks import all_tasks

    from lvmbench.data.data_commands import data_status, suite_data_root

    specs = all_tasks()
    member = {t.id: ", ".join(sorted({*t.suites, *t.profiles})) for t in specs}  # before profiles are applied
    if suite:
        get_suite(suite)
        specs = [t.for_suite(suite) for t in specs if t.in_suite(suite)]
    # the root `eval --suite` would use; synthetic data is not generated just to list tasks
    root = suite_data_root(suite, data_root, generate=False) if suite else default_data_root(data_root)
    rows = []
    for t in specs:
        protos = []
        for p in t.default_protocols or []:
            protos.append(p if p in PROTOCOLS else f"{p} (not available)")
        status = data_status(t, root, suite or "lvmmed")
        rows.append([t.id, t.family, t.dims, t.primary_metric, ", ".join(protos), member[t.id], status])
    print(tabulate(rows, headers=["task", "family", "dims", "metric", "protocols", "suites", "data"], tablefmt="simple"))
    from lvmbench.tasks import broken_tasks

    broken = broken_tasks()
    for name, (path, err) in broken.items():  # listed, never a reason to hide the other tasks
        print(f"error: task '{name}' is broken (left out): {err}", file=sys.stderr)
    if broken:
        raise typer.Exit(2)


@app.command("encoders")
def encoders_cmd() -> None:
    """List registered encoders (any timm or torchvision ResNet name also works)."""
    from lvmbench.encoders import ENCODERS
    from lvmbench.encoders.adapters import TORCHVISION_RESNETS

    rows = [[n, "registered"] for n in ENCODERS.names()]
    rows += [[n, "torchvision"] for n in TORCHVISION_RESNETS]
    rows.append(["<any timm model name>", "timm (e.g. convnext_tiny, vit_base_patch16_224)"])
    print(tabulate(rows, headers=["encoder", "kind"], tablefmt="simple"))
    from lvmbench.encoders.pretrained import hub_cache, listing, torch_checkpoints

    print(f"\nReleased weights (read from the local caches only: {hub_cache()} and {torch_checkpoints()}; a preset name implies them):\n")
    print(tabulate(listing(), headers=["encoder", "architecture", "weights from", "paper rows", "cached here"], tablefmt="simple"))


@app.command("protocols")
def protocols_cmd(
    name: Annotated[Optional[str], typer.Argument(help="one protocol (default: all)")] = None,
) -> None:
    """Every setting a task.yaml may give each protocol: key, type, default, doc."""
    from lvmbench.protocols.settings_doc import settings_table

    print(settings_table(name))


@app.command("readers")
def readers_cmd(
    name: Annotated[Optional[str], typer.Argument(help="one reader (default: all)")] = None,
) -> None:
    """Every dataset reader a task.yaml may name: its options (type, default, meaning) and one example."""
    from lvmbench.data.readers_doc import readers_table

    print(readers_table(name), end="")


@app.command("suites")
def suites_cmd() -> None:
    """List suites: built-in, described by plugin packages, and named by tasks; their tasks and data."""
    from lvmbench.suites import all_suites
    from lvmbench.tasks import all_tasks

    specs = all_tasks()
    rows = []
    for name, st in all_suites().items():
        members = sorted(t.id for t in specs if t.in_suite(name))
        data = "synthetic (generated)" if st.synthetic else (f"default {st.default_data_root}" if st.default_data_root else "--data-root / LVMBENCH_DATA")
        shown = ", ".join(members[:6]) + (f" (+{len(members) - 6})" if len(members) > 6 else "")
        rows.append([name, st.declared_by, len(members), shown, data, st.description])
    print(tabulate(rows, headers=["suite", "from", "tasks", "members", "data", "description"], tablefmt="simple", maxcolwidths=[None, None, None, 40, 30, 50]))


task_app = typer.Typer(no_args_is_help=True, help="Write and check task folders (out-of-tree tasks, plugins).")
app.add_typer(task_app, name="task")


@task_app.command("new")
def task_new_cmd(
    task_id: Annotated[str, typer.Argument(help="new task id (lower case, digits, _)")],
    family: Annotated[str, typer.Option(help="classification | segmentation | detection")],
    from_: Annotated[Path, typer.Option("--from", help="the dataset folder to infer the data options from")],
    out: Annotated[Path, typer.Option(help="folder of task folders to write into (put it on LVMBENCH_TASK_PATH)")] = Path("."),
    suite: Annotated[Optional[str], typer.Option(help="the task's own suite (default: <task id with - for _>)")] = None,
    verify: Annotated[bool, typer.Option(help="run `data verify` on the new task")] = True,
) -> None:
    """Write OUT/ID/task.yaml from the closest built-in task of FAMILY, with data options inferred from --from."""
    from lvmbench.scaffold import new_task

    new_task(task_id, family, from_, out, suite=suite, verify=verify, log=lambda s: print(s))


@task_app.command("check")
def task_check_cmd(
    folder: Annotated[Path, typer.Argument(help="a task folder (holding task.yaml) or the task.yaml itself")],
    data_root: Annotated[Optional[Path], typer.Option(help="also verify the data under this folder")] = None,
) -> None:
    """Validate an out-of-tree task folder: spec, protocol settings, reader options, metric names (and data)."""
    from lvmbench.scaffold import check_task

    if not check_task(folder, data_root, log=lambda s: print(s)):
        raise typer.Exit(1)


@app.command("leaderboard")
def leaderboard_cmd(
    results: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    out: Annotated[Optional[Path], typer.Option(help="output markdown file, its per-family and label-efficiency PNGs written next to it (default: RESULTS/leaderboard.md)")] = None,
    reference: Annotated[Optional[str], typer.Option(help="reference encoder of the normalised score (NAME or NAME@SHA12)")] = None,
    random_anchor: Annotated[Optional[str], typer.Option(help="random-init anchor of the normalised score (default: the reference's architecture, random-init)")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples per CI and paired test")] = 2000,
    html: Annotated[Optional[Path], typer.Option(help="also write FOLDER/index.html: one self-contained page, sortable and filterable, cells linking to their result JSON")] = None,
    csv: Annotated[Optional[Path], typer.Option(help="also write one row per result unit (identity, metrics, CIs) as CSV")] = None,
    parquet: Annotated[Optional[Path], typer.Option(help="the same table as Parquet (needs pyarrow: pip install \"lvmbench[parquet]\")")] = None,
) -> None:
    """Aggregate every result JSON into a markdown leaderboard with per-family plots, optionally an
    HTML page and CSV/Parquet exports (exit 1 if a result file was unreadable)."""
    from lvmbench.leaderboard import write

    out = out if out is not None else results / "leaderboard.md"  # inside the folder the harness owns
    problems: list[str] = []

    def warn(line: str) -> None:
        if line.startswith("skip"):
            problems.append(line)
        print(line, file=sys.stderr)

    write(results, out, warn=warn, reference=reference, random_anchor=random_anchor, n_boot=_positive(n_boot, "--n-boot"), html=html, csv=csv, parquet=parquet)
    extra = "".join(f", {p}" for p in (html / "index.html" if html else None, csv, parquet) if p)
    print(f"wrote {out}{extra}" + (f"; {len(problems)} unreadable file(s) left out (see above)" if problems else ""), file=sys.stderr)
    if problems:
        raise typer.Exit(1)


def _positive(n: int, name: str) -> int:
    if n < 100:
        raise UserError(f"{name} {n} is too small for a 95% interval", fix=f"use {name} 1000 or more")
    return n


@app.command("compare")
def compare_cmd(
    a: Annotated[str, typer.Argument(help="encoder A: NAME or NAME@SHA12 (as in the results tree)")],
    b: Annotated[str, typer.Argument(help="encoder B")],
    results: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    suite: Annotated[Optional[str], typer.Option(help="suite (default: the one suite holding both)")] = None,
    label_fraction: Annotated[float, typer.Option(help="compare results at this training-label fraction")] = 1.0,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples")] = 2000,
    alpha: Annotated[float, typer.Option(help="family-wise error rate over the tasks (Holm)")] = 0.05,
) -> None:
    """Paired bootstrap per task (patients resampled together), Holm-corrected: which differences are real."""
    from lvmbench.compare import compare, format_report, load_records

    if not 0 < alpha < 1:
        raise UserError(f"--alpha {alpha} is not in (0, 1)", fix="e.g. --alpha 0.05")
    records, _ = load_records(results, warn=lambda s: print(s, file=sys.stderr))
    suite_name, ka, kb, rows = compare(records, a, b, suite=suite, fraction=label_fraction, n_boot=_positive(n_boot, "--n-boot"), alpha=alpha)
    if not rows:
        raise UserError(f"no task has results for both encoders at label fraction {label_fraction:g}", path=results, fix="run `lvmbench eval` for both on the same tasks")
    print(format_report(suite_name, ka, kb, rows, alpha, label_fraction), end="")


@app.command("audit")
def audit_cmd(
    pretrain_manifest: Annotated[Path, typer.Option(help="pretrain.json of `lvmbench pretrain`, a JSON list, a file_list.txt, or LVM-Med's lvm-med-training-data folder")],
    suite: Annotated[str, typer.Option(help="suite whose tasks' test splits are audited")] = "lvmmed",
    tasks: Annotated[Optional[str], typer.Option(help="comma-separated task ids (default: the whole suite)")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="folder holding the datasets (default: $LVMBENCH_DATA)")] = None,
    results: Annotated[Path, typer.Option(help="results folder; the report goes to RESULTS/_audit/SUITE/")] = Path("results"),
    encoder: Annotated[Optional[str], typer.Option(help="the encoder pretrained on this data (NAME@SHA12): only its leaderboard cells get footnotes")] = None,
    pretrain_root: Annotated[Optional[Path], typer.Option(help="folder the manifest's paths are relative to: hashes the listed files when the manifest has no sha256")] = None,
) -> None:
    """Leakage audit: test cases of each task found in a pretraining file list (by name, content hash, patient id)."""
    from lvmbench.audit import read_manifest, run_audit
    from lvmbench.data.task_data import load_task_data
    from lvmbench.runner import EvalRequest, resolve_data_root, select_tasks

    manifest = read_manifest(pretrain_manifest)
    req = EvalRequest(encoder="-", suite=suite, tasks=_csv(tasks), data_root=data_root, results=results)
    specs = select_tasks(req)
    root = resolve_data_root(req)
    path, report = run_audit(
        manifest,
        suite,
        lambda t: load_task_data(t, root, suite=suite),
        specs,
        results,
        encoder=encoder,
        pretrain_root=pretrain_root,
        log=lambda s: print(s, file=sys.stderr),
    )
    leaks = sum(1 for f in report["tasks"] if f["affected_cases"])
    print(f"audited {len(report['tasks'])} task(s) against {len(manifest.entries)} pretraining files: {leaks} with leaked test cases, {len(report['skipped'])} skipped; report {path}", file=sys.stderr)
    if report["skipped"] and not report["tasks"]:
        raise typer.Exit(1)


@data_app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Argument(help="folder to write the synthetic datasets into")],
    only: Annotated[Optional[str], typer.Option(help="comma-separated dataset folder names")] = None,
) -> None:
    """Write a tiny synthetic copy of every dataset in its publisher's layout.

    OUT must be new, empty or written by this command before: a folder lvmbench did not create is
    never written into, and only dataset folders carrying lvmbench's marker are ever replaced."""
    from lvmbench.data.synth import write_all

    written = write_all(out, _csv(only))
    done = f": {', '.join(written)}" if written else " (all were there already)"
    print(f"wrote {len(written)} synthetic dataset(s) into {out}{done}", file=sys.stderr)


@data_app.command("verify")
def verify_cmd(
    tasks: Annotated[Optional[list[str]], typer.Argument(help="task ids (default: every task of the suite)")] = None,
    suite: Annotated[Optional[str], typer.Option(help="apply this suite's profiles (and its default data root)")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="folder holding the datasets (default: $LVMBENCH_DATA or the suite's)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="decoding threads (default: CPU count, at most 8)")] = None,
    max_warnings: Annotated[int, typer.Option(help="warnings shown per task")] = 20,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Check each task's data: presence, counts, every file decoded, masks, labels, split. Exit 1 if a task cannot run."""
    from lvmbench.data.data_commands import report_lines, select, suite_data_root
    from lvmbench.data.verify import verify_task

    specs = select(tasks, suite)
    root = suite_data_root(suite, data_root)
    rows, blocked = [], 0
    for spec in specs:
        report = verify_task(spec, root, suite or "lvmmed", workers=workers, progress=progress)
        print("\n".join(report_lines(report, max_warnings)))
        blocked += not report.runnable
        rows.append([spec.id, report.cases, len(report.fatal), len(report.warnings), "ready" if report.runnable else "CANNOT RUN"])
    print()
    print(tabulate(rows, headers=["task", "cases", "errors", "warnings", "status"], tablefmt="simple"))
    if blocked:
        print(f"{blocked} task(s) cannot run; fix the ERROR lines above", file=sys.stderr)
        raise typer.Exit(1)


@data_app.command("split")
def split_cmd(
    task: Annotated[str, typer.Argument(help="task id")],
    suite: Annotated[str, typer.Option(help="the suite whose profile (data folder, split rule) the split is for")] = "lvmmed",
    data_root: Annotated[Optional[Path], typer.Option(help="folder holding the datasets (default: $LVMBENCH_DATA or the suite's)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write here instead of the splits folder ($LVMBENCH_SPLITS/<suite>/<task>.json); a task then uses it only via split.file")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing split file")] = False,
) -> None:
    """Freeze the task's split: resolve its rule once and write the case lists; runs of this suite then use them."""
    from lvmbench.data.data_commands import freeze_split, select, suite_data_root

    spec = select([task], suite)[0]
    path, split = freeze_split(spec, suite, suite_data_root(suite, data_root), out, force)
    c = split.counts()
    print(f"wrote {path}: train {c['train']} / val {c['val']} / test {c['test']}, split hash {split.hash()}")


@data_app.command("import-splits")
def import_splits_cmd(
    path: Annotated[Path, typer.Argument(help="a published split list (LVM-Med files_split JSON)")],
    task: Annotated[str, typer.Option(help="task id the lists are for")],
    suite: Annotated[str, typer.Option(help="the suite whose runs use the imported split")] = "lvmmed",
    data_root: Annotated[Optional[Path], typer.Option(help="folder holding the datasets (default: $LVMBENCH_DATA or the suite's)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write here instead of the splits folder")] = None,
    allow_flawed_split: Annotated[bool, typer.Option(help="accept overlapping parts (e.g. val == test); results are flagged")] = False,
    allow_missing: Annotated[bool, typer.Option(help="keep only the listed cases this copy of the data has; results are flagged")] = False,
    carve_val: Annotated[Optional[float], typer.Option(help="when val == test: carve this fraction of train as validation instead")] = None,
    seed: Annotated[int, typer.Option(help="seed for --carve-val")] = 0,
    force: Annotated[bool, typer.Option(help="replace an existing split file")] = False,
) -> None:
    """Import a paper's train/val/test lists onto the task's case ids (overlap-checked)."""
    from lvmbench.data.data_commands import import_split, select, suite_data_root

    if carve_val is not None and not 0 < carve_val < 1:
        raise UserError("--carve-val must be in (0, 1)", fix="e.g. --carve-val 0.2")
    spec = select([task], suite)[0]
    out_path, result = import_split(
        spec, suite, suite_data_root(suite, data_root), path, out=out, force=force,
        allow_flawed=allow_flawed_split, allow_missing=allow_missing, carve_val=carve_val, seed=seed,
    )
    c = result.split.counts()
    flags = f", flags: {', '.join(result.split.flags)}" if result.split.flags else ""
    print(f"wrote {out_path}: train {c['train']} / val {c['val']} / test {c['test']}, split hash {result.split.hash()}{flags}")


@data_app.command("prompts")
def prompts_cmd(
    task: Annotated[str, typer.Argument(help="task id")],
    suite: Annotated[str, typer.Option(help="the suite whose profile (data, image size, prompt rule) the prompts are for")] = "lvmmed",
    preset: Annotated[Optional[str], typer.Option(help="lvmmed | medsam | sam-med2d | tight (default: the task's prompt.preset)")] = None,
    seed: Annotated[int, typer.Option(help="the seed of the units that read the prompts")] = 0,
    protocol: Annotated[Optional[str], typer.Option(help="the prompt protocol whose settings apply (default: the task's first)")] = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="write the prompts to FILE")] = None,
    import_from: Annotated[Optional[Path], typer.Option("--import", help="import FILE (lvmbench prompt file or SAM-Med2D prompt JSON), checked against the masks")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="lvmbench | sam-med2d (export default: lvmbench; import: detected)")] = None,
    frame: Annotated[Optional[int], typer.Option(help="side in px of the grid a SAM-Med2D file's coordinates are in (default 256)")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="folder holding the datasets (default: $LVMBENCH_DATA or the suite's)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache folder (decoded arrays)")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing export or imported file")] = False,
) -> None:
    """Draw the task's prompts once and write them beside its split (read by every encoder), or export / import them."""
    from lvmbench.data.data_commands import select, suite_data_root
    from lvmbench.protocols.prompt_command import prompts_command

    print(prompts_command(select([task], suite)[0], suite, suite_data_root(suite, data_root), preset=preset, seed=seed, protocol=protocol, export=export, import_from=import_from,
                          fmt=fmt, frame=frame, force=force, cache_dir=cache_dir, progress=sys.stderr.isatty()))


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
    from lvmbench.launch.status import clear_stale as clear, collect, report
    from lvmbench.runner import EvalRequest

    if suite and not (results / suite).is_dir():  # a typo would otherwise print an empty grid
        from lvmbench.suites import get_suite

        get_suite(suite)
    req = None
    if encoder:
        try:
            seed_list = [int(s) for s in _csv(seeds) or ["0"]]
            fractions = [float(f) for f in _csv(label_fraction) or ["1.0"]]
        except ValueError:
            raise UserError("--seeds must be integers and --label-fraction numbers", fix="e.g. --seeds 0,1,2 --label-fraction 0.1,1.0") from None
        req = EvalRequest(encoder=encoder, weights=weights, suite=suite or "lvmmed", tasks=_csv(tasks), protocols=_csv(protocol), heads=_csv(head),
                          seeds=seed_list, fractions=fractions, data_root=data_root, results=results, cache_dir=cache_dir)
    elif weights or tasks or protocol or head:
        raise UserError("--weights, --tasks, --protocol and --head describe a plan and need --encoder", fix="add --encoder NAME, or drop them to see what exists")
    grid = collect(results, suite or (req.suite if req else None), req, check=check, data_root=data_root, cache_dir=cache_dir)
    if clear_stale:
        clear(grid)
    print(report(grid, results, clear_stale), end="")


def main() -> None:
    try:
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # click turns a KeyboardInterrupt into Abort
        print("interrupted; finished units are saved (a unit stopped half-way is not), rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors (typer vendors its own click: matched by class name)
        if any(c.__name__ == "ClickException" for c in type(e).__mro__):
            print(f"error: {usage_line(e)}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", 2))
        raise


def usage_line(e: Exception) -> str:
    """A command-line usage error (unknown option or command, bad value) as one line with the fix."""
    msg = " ".join(str(e.format_message() if hasattr(e, "format_message") else e).split())
    ctx = getattr(e, "ctx", None)
    names, c = [], ctx
    while c is not None and c.parent is not None:  # the root's name is however python was started
        names.append(c.info_name)
        c = c.parent
    where = " ".join(["lvmbench", *reversed(names)])
    name = getattr(e, "option_name", None)
    if name and not getattr(e, "possibilities", None) and ctx is not None:
        from lvmbench.registry import suggest

        opts = [o for p in ctx.command.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", []) if o.startswith("--")]
        hint = suggest(name.lstrip("-"), [o[2:] for o in opts])
        if hint:
            msg += f" (did you mean --{hint}?)"
    return f"{where}: {msg.rstrip('.')}; fix: see `{where} --help`"


if __name__ == "__main__":
    main()
