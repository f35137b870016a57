"""Command line: ``lvmbench eval | tasks | encoders | leaderboard | data ...``.

User errors (bad data, bad checkpoint, unknown names) print one line and exit with status 2;
only bugs show a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from lvmbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Synthetic data, verification, splits.")
app.add_typer(data_app, name="data")


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@app.command("eval")
def eval_cmd(
    encoder: Annotated[str, typer.Option(help="timm/torchvision name, lvmmed-r50, lvmmed-vitb or a plugin")],
    weights: Annotated[Optional[Path], typer.Option(help="checkpoint (.pth/.pt/.torch state_dict or .safetensors); none = random-init")] = None,
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
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 (default: cuda if available)")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="decoded-image and feature cache (default: $LVMBENCH_CACHE or ~/.cache/lvmbench)")] = None,
    amp: Annotated[bool, typer.Option(help="bf16 autocast on CUDA")] = False,
    workers: Annotated[Optional[int], typer.Option(help="data-loader workers")] = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Evaluate one encoder on a suite (or some tasks); finished units are skipped."""
    from lvmbench.paths import data_root as default_data_root
    from lvmbench.runner import EvalRequest, parse_shard, run

    try:
        seed_list = [int(s) for s in _csv(seeds) or ["0"]]
        fractions = [float(f) for f in _csv(label_fraction) or ["1.0"]]
    except ValueError:
        raise UserError("--seeds must be integers and --label-fraction numbers", fix="e.g. --seeds 0,1,2 --label-fraction 0.1,1.0") from None
    if any(not 0 < f <= 1 for f in fractions):
        raise UserError("--label-fraction values must be in (0, 1]", fix="e.g. --label-fraction 0.01,0.1,1.0")
    options = {"amp": amp}
    if workers is not None:
        options["workers"] = workers
    req = EvalRequest(
        encoder=encoder,
        weights=weights,
        suite=suite,
        tasks=_csv(tasks),
        protocols=_csv(protocol),
        heads=_csv(head),
        seeds=seed_list,
        fractions=fractions,
        data_root=default_data_root(data_root),
        results=results,
        shard=parse_shard(shard),
        overwrite=overwrite,
        device=device,
        cache_dir=cache_dir,
        progress=progress,
        options=options,
    )
    summary = run(req)
    print(
        f"{len(summary.done)} done, {len(summary.skipped)} skipped (already done), {len(summary.busy)} busy, "
        f"{len(summary.failed)} failed, {len(summary.unavailable)} not available; results in {results}",
        file=sys.stderr,
    )
    if summary.failed:
        raise typer.Exit(1)


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

    specs = all_tasks()
    if suite:
        get_suite(suite)
        specs = [t.for_suite(suite) for t in specs if t.in_suite(suite)]
    root = default_data_root(data_root)
    rows = []
    for t in specs:
        protos = []
        for p in t.default_protocols or []:
            protos.append(p if p in PROTOCOLS else f"{p} (not available)")
        if root is None:
            status = "no --data-root"
        else:
            status = "present" if (root / t.data.dir).is_dir() else f"missing {t.data.dir}/"
        rows.append([t.id, t.family, t.dims, t.primary_metric, ", ".join(protos), ", ".join(sorted({*t.suites, *t.profiles})), status])
    print(tabulate(rows, headers=["task", "family", "dims", "metric", "protocols", "suites", "data"], tablefmt="simple"))


@app.command("encoders")
def encoders_cmd() -> None:
    """List registered encoders (any timm or torchvision ResNet name also works)."""
    from lvmbench.encoders import ENCODERS
    from lvmbench.encoders.adapters import TORCHVISION_RESNETS

    rows = [[n, "registered"] for n in ENCODERS.names()]
    rows += [[n, "torchvision"] for n in TORCHVISION_RESNETS]
    rows.append(["<any timm model name>", "timm (e.g. convnext_tiny, vit_base_patch16_224)"])
    print(tabulate(rows, headers=["encoder", "kind"], tablefmt="simple"))


@app.command("leaderboard")
def leaderboard_cmd(
    results: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    out: Annotated[Path, typer.Option(help="output markdown file")] = Path("leaderboard.md"),
) -> None:
    """Aggregate every result JSON into a markdown leaderboard."""
    from lvmbench.leaderboard import write

    write(results, out, warn=lambda s: print(s, file=sys.stderr))
    print(f"wrote {out}", file=sys.stderr)


@data_app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Argument(help="folder to write the synthetic datasets into")],
    only: Annotated[Optional[str], typer.Option(help="comma-separated dataset folder names")] = None,
) -> None:
    """Write a tiny synthetic copy of every dataset in its publisher's layout."""
    from lvmbench.data.synth import write_all

    names = write_all(out, _csv(only))
    print(f"wrote {len(names)} synthetic datasets into {out}: {', '.join(names)}", file=sys.stderr)


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
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted; finished units are saved, rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
