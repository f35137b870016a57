"""``lvmbench data synth | verify | split | import-splits``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from lvmbench.cli.groups import csv_list as _csv
from lvmbench.cli.groups import data_app
from lvmbench.errors import UserError


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
    cache_dir: Annotated[Optional[Path], typer.Option(help="the cache eval uses (default: $LVMBENCH_CACHE or ~/.cache/lvmbench): the smoke suite's data is there, and the files that pass are remembered there, so eval does not decode them again")] = None,
) -> None:
    """Check each task's data: presence, counts, every file decoded, masks, labels, split. Exit 1 if a task cannot run."""
    from lvmbench.data.data_commands import report_lines
    from lvmbench.data.verify import verify_task
    from lvmbench.paths import usable_cache_dir
    from lvmbench.suites import suite_data_root
    from lvmbench.tasks import suite_tasks as select

    specs = select(tasks, suite)
    try:
        cache = usable_cache_dir(cache_dir)
    except UserError:
        if cache_dir is not None:
            raise  # asked for by name: one line saying why it cannot be used
        cache = None  # the default cache is not writable here: verify without remembering
    root = suite_data_root(suite, data_root, cache_dir=cache, tasks=specs)
    rows, blocked = [], 0
    for spec in specs:
        report = verify_task(spec, root, suite or "lvmmed", workers=workers, progress=progress, cache_dir=cache)
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
    from lvmbench.data.data_commands import freeze_split
    from lvmbench.suites import suite_data_root
    from lvmbench.tasks import suite_tasks as select

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
    from lvmbench.data.data_commands import import_split
    from lvmbench.suites import suite_data_root
    from lvmbench.tasks import suite_tasks as select

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
    cache_dir: Annotated[Optional[Path], typer.Option(help="cache folder (decoded arrays; the smoke suite's data)")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing export or imported file")] = False,
) -> None:
    """Draw the task's prompts once and write them beside its split (read by every encoder), or export / import them."""
    from lvmbench.protocols.prompt_command import prompts_command
    from lvmbench.suites import suite_data_root
    from lvmbench.tasks import suite_tasks

    spec = suite_tasks([task], suite)[0]
    root = suite_data_root(suite, data_root, cache_dir=cache_dir)
    print(prompts_command(spec, suite, root, preset=preset, seed=seed, protocol=protocol, export=export, import_from=import_from,
                          fmt=fmt, frame=frame, force=force, cache_dir=cache_dir, progress=sys.stderr.isatty()))
