"""The README is the contract: CI runs its install and test commands literally, and its first run
command computes on a fresh clone instead of skipping units whose results the repository ships."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_command():
    spec = importlib.util.spec_from_file_location("readme_command", ROOT / ".ci" / "readme_command.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.section_command


def test_ci_runs_the_readme_install_and_test_commands():
    section_command = _readme_command()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert section_command(readme, "Install") == 'pip install -e ".[dev]"'
    assert section_command(readme, "Test") == "pytest"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # the commands are read out of the README and evaluated as written, never retyped
    assert "readme_command.py Install" in ci and "readme_command.py Test" in ci
    assert 'eval "$install_cmd"' in ci and 'eval "$test_cmd"' in ci
    assert "python -m pytest" not in ci and "python3 -m pytest" not in ci


def test_a_section_with_two_commands_is_refused():
    section_command = _readme_command()
    with pytest.raises(SystemExit, match="one command"):
        section_command("## Test\n\n```\npytest\npytest -m slow\n```\n", "Test")
    with pytest.raises(SystemExit, match="no '## Install'"):
        section_command("## Test\n\n```\npytest\n```\n", "Install")


def test_no_results_are_shipped_where_eval_writes():
    """`lvmbench eval` writes to results/ by default; the repository's own results live in
    reference-results/, so a newcomer's first smoke run computes every unit."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "lvmbench eval --encoder resnet50 --suite smoke" in readme
    if shutil.which("git") and (ROOT / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True).stdout.split()
        assert tracked == [], tracked[:3]
        assert subprocess.run(["git", "ls-files", "reference-results"], cwd=ROOT, capture_output=True, text=True).stdout
    import inspect

    from lvmbench.cli.evaluate import eval_cmd

    assert str(inspect.signature(eval_cmd).parameters["results"].default) == "results"


def test_no_test_imports_the_tests_folder_as_a_package():
    """Plain ``pytest`` (the README's command) puts each test's folder on ``sys.path``, not the
    repository root: ``from tests.x import`` only works under ``python -m pytest`` and fails a fresh clone."""
    bad = [f"{p.name}:{i}" for p in sorted((ROOT / "tests").glob("*.py"))
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if re.match(r"\s*(from tests[.\s]|import tests\b)", line)]
    assert not bad, bad
