"""Under an ASCII locale (LC_ALL=C with Python's UTF-8 mode off, as some CI runners and minimal
containers have) the command line prints its non-ASCII characters as escapes instead of crashing,
and the files it writes are UTF-8 whatever the locale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ASCII = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": ""}


def _lvmbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "from lvmbench.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=ASCII, cwd=cwd, capture_output=True, timeout=300)


def test_help_with_non_ascii_characters_prints_under_an_ascii_locale(tmp_path):
    done = _lvmbench("pretrain", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert b"\\u2026" in done.stdout or b"\\u2265" in done.stdout  # escaped, not dropped


def test_leaderboard_of_no_results_writes_utf8_under_an_ascii_locale(tmp_path):
    (tmp_path / "results").mkdir()
    done = _lvmbench("leaderboard", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "lb.md"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    (tmp_path / "lb.md").read_bytes().decode("utf-8")
