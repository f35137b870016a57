"""Running the CLI in-process for tests (no tests here): exit code and captured output."""

from __future__ import annotations

import sys


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
