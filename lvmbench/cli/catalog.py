"""What exists: ``lvmbench tasks | encoders | protocols | readers | suites`` and ``task new | check``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from lvmbench.cli.groups import app, task_app


@app.command("tasks")
def tasks_cmd(
    suite: Annotated[Optional[str], typer.Option(help="only tasks of this suite")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="check data presence under this folder")] = None,
) -> None:
    """List tasks: id, family, dims, metric, protocols, data status."""
    from lvmbench.data.status import data_status
    from lvmbench.paths import data_root as default_data_root
    from lvmbench.suites import get_suite, suite_data_root

    found = catalog()
    specs = [spec for _, spec in sorted(found.specs.items())]
    member = {t.id: ", ".join(sorted({*t.suites, *t.profiles})) for t in specs}  # before profiles are applied
    if suite:
        get_suite(suite)
        specs = [t.for_suite(suite) for t in specs if t.in_suite(suite)]
    # the root `eval --suite` would use; synthetic data is not generated just to list tasks
    root = suite_data_root(suite, data_root, generate=False) if suite else default_data_root(data_root)
    rows = []
    for t in specs:
        status = data_status(t, root, suite or "lvmmed")
        rows.append([t.id, t.family, t.dims, t.primary_metric, ", ".join(t.default_protocols or []), member[t.id], status])
    print(tabulate(rows, headers=["task", "family", "dims", "metric", "protocols", "suites", "data"], tablefmt="simple"))
    for name, (path, err) in sorted(found.broken.items()):  # listed, never a reason to hide the other tasks
        print(f"error: task '{name}' is broken (left out): {err}", file=sys.stderr)
    if found.broken:
        raise typer.Exit(2)


def catalog():  # noqa: ANN201 (lvmbench.task_files.Discovered)
    """Every task file, checked — from the remembered checks when the files and the code are those
    checked before (``lvmbench.task_checks``), so listing tasks loads no protocol and no torch."""
    from lvmbench.task_checks import checked_tasks

    def check(spec):  # noqa: ANN001, ANN202
        from lvmbench.tasks import check_task  # the protocols (torch): only for a file not checked before

        check_task(spec)

    return checked_tasks(check)


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

    specs = list(catalog().specs.values())
    rows = []
    for name, st in all_suites().items():
        members = sorted(t.id for t in specs if t.in_suite(name))
        data = "synthetic (generated)" if st.synthetic else (f"default {st.default_data_root}" if st.default_data_root else "--data-root / LVMBENCH_DATA")
        shown = ", ".join(members[:6]) + (f" (+{len(members) - 6})" if len(members) > 6 else "")
        rows.append([name, st.declared_by, len(members), shown, data, st.description])
    print(tabulate(rows, headers=["suite", "from", "tasks", "members", "data", "description"], tablefmt="simple", maxcolwidths=[None, None, None, 40, 30, 50]))


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
