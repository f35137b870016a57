"""Reading results: ``lvmbench leaderboard | compare | audit``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lvmbench.cli.groups import app
from lvmbench.cli.groups import csv_list as _csv
from lvmbench.errors import UserError


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
    metric: Annotated[Optional[list[str]], typer.Option("--metric", metavar="NAME", help="also show the family tables in this metric (repeatable; 'all' = every metric the results and reported rows carry), e.g. --metric auc")] = None,
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

    exporter = None
    if csv is not None or parquet is not None:
        from lvmbench.leaderboard.export import require_parquet, write_exports  # pandas: only for the exports

        if parquet is not None:
            require_parquet()
        exporter = write_exports
    write(results, out, warn=warn, reference=reference, random_anchor=random_anchor, n_boot=_positive(n_boot, "--n-boot"), html=html, csv=csv,
          parquet=parquet, metrics=metric or [], exporter=exporter)
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
