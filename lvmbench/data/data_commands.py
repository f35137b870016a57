"""What ``lvmbench data verify | split | import-splits`` and the ``tasks`` data column do, given a
task spec and its data root (``lvmbench.suites.suite_data_root`` finds the root the way ``eval``
does). Kept out of the CLI so the command line stays a thin layer and these can be called from tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lvmbench.data.split_import import ImportResult, import_lists, load_paper_lists
from lvmbench.data.splits import Split, frozen_split_path, make_split, write_split_file
from lvmbench.data.task_data import dataset_root, limit_cases, task_reader
from lvmbench.data.verify import TaskReport
from lvmbench.errors import DataError, UserError
from lvmbench.spec import TaskSpec


def report_lines(report: TaskReport, max_warnings: int = 20) -> list[str]:
    head = f"{report.task}: {report.root or '-'}"
    if report.cases:
        head += f", {report.cases} cases"
    if report.split_counts:
        head += ", split " + " / ".join(f"{k} {v}" for k, v in report.split_counts.items()) + f" ({report.split_origin})"
    lines = [head]
    lines += [f"  ERROR    {i.line()}" for i in report.fatal]
    warnings = report.warnings
    lines += [f"  warning  {i.line()}" for i in warnings[:max_warnings]]
    if len(warnings) > max_warnings:
        lines.append(f"  ... {len(warnings) - max_warnings} more warning(s) (use --max-warnings)")
    return lines


def _task_cases(spec: TaskSpec, data_root: Path | None):
    folder = dataset_root(spec, data_root)
    if not folder.is_dir():
        raise DataError(f"dataset folder for task '{spec.id}' not found", path=folder, fix="fix --data-root (or pass --suite) so that it holds the dataset")
    reader = task_reader(spec, folder)
    return folder, limit_cases(reader.cases(), spec.data.limit)


def freeze_split(spec: TaskSpec, suite: str, data_root: Path | None, out: Path | None = None, force: bool = False) -> tuple[Path, Split]:
    """Resolve the task's own split spec once and write it as a split file (``lvmbench data split``)."""
    path = out or frozen_split_path(spec.id, suite)
    if path.exists() and not force:
        raise UserError(f"a split file for '{spec.id}' already exists", path=path, fix="pass --force to overwrite it, or delete it to go back to the task's rule")
    folder, cases = _task_cases(spec, data_root)
    split = make_split(cases, spec.split, spec.folder)  # never the existing file: re-freezing starts from the rule
    origin = f"frozen from the task's {spec.split.source} split (seed {spec.split.seed}) of {folder}"
    _write_split(path, split, task=spec.id, suite=suite, origin=origin, cases=cases)
    return path, split


def _write_split(path: Path, split: Split, **meta) -> None:
    try:
        write_split_file(path, split, **meta)
    except OSError as e:
        raise UserError(
            f"cannot write the split file ({e.strerror or e.__class__.__name__})",
            path=path,
            fix="pass --out FILE in a folder you can write to, or point LVMBENCH_SPLITS at one",
        ) from None


def import_split(
    spec: TaskSpec,
    suite: str,
    data_root: Path | None,
    lists_path: Path,
    *,
    out: Path | None = None,
    force: bool = False,
    allow_flawed: bool = False,
    allow_missing: bool = False,
    carve_val: float | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[Path, ImportResult]:
    path = out or frozen_split_path(spec.id, suite)
    if path.exists() and not force:
        raise UserError(f"a split file for '{spec.id}' already exists", path=path, fix="pass --force to replace it")
    lists = load_paper_lists(lists_path)
    _, cases = _task_cases(spec, data_root)
    result = import_lists(lists, cases, allow_flawed=allow_flawed, allow_missing=allow_missing, carve_val=carve_val, seed=seed, log=log)
    _write_split(path, result.split, task=spec.id, suite=suite, origin=result.origin, cases=cases, allow_overlap=result.allow_overlap)
    return path, result
