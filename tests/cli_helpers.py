"""Running the CLI in-process for tests (no tests here): exit code and captured output."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from lvmbench import cli as cli_mod

    monkeypatch.setattr(sys, "argv", ["lvmbench", *args])
    code = 0
    try:
        cli_mod.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def the_line(err: str, needle: str) -> str:
    """The one line carrying ``needle``; the output has no traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if needle in ln]
    assert lines, f"no line with {needle!r} in:\n{err}"
    return lines[0]


@contextlib.contextmanager
def rt_task(monkeypatch, tmp_path: Path) -> Iterator[Path]:
    """A tiny class-folder task ``rt`` on LVMBENCH_TASK_PATH, its data under ``tmp_path/data``."""
    from builders import task_folder, tiny_task_dir, write_class_folders

    write_class_folders(tmp_path / "data" / "rt_data")
    with task_folder(monkeypatch, tmp_path, tiny_task_dir(tmp_path / "tasks", "rt", "rt_data")):
        yield tmp_path


def eval_rt(monkeypatch, capsys, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    """``lvmbench eval`` of ``rt``'s kNN unit with ResNet-18 into ``tmp_path/results``."""
    return cli(monkeypatch, capsys, "eval", "--encoder", "resnet18", "--tasks", "rt", "--protocol", "knn", "--data-root", str(tmp_path / "data"),
               "--results", str(tmp_path / "results"), "--no-progress", "--workers", "0", *extra)
