"""The package's shape, checked: the layer contract holds (import-linter), every module sits in a
layer, README's Architecture section lists the same layers, imports inside functions are only the
CLI's and the optional heavy packages', and no module is longer than 450 lines."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lvmbench"
# optional heavy packages a function may import (each with its reason), besides the CLI's commands
OPTIONAL = ("mmdet", "mmcv", "mmengine", "segment_anything", "submitit", "matplotlib", "pyarrow")
MAX_FUNCTION_IMPORTS = 20
MAX_LINES = 450


def contract_layers() -> list[str]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [c["layers"] for c in doc["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return layers


def test_lint_imports_keeps_every_contract():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_module_sits_in_a_layer():
    named = {m.strip() for line in contract_layers() for m in re.split(r"[|:]", line)}
    top = {f"lvmbench.{p.stem}" for p in PKG.glob("*.py") if p.stem != "__init__"}
    top |= {f"lvmbench.{p.name}" for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top - named == set(), f"modules outside the layer contract: {sorted(top - named)}"
    assert named - top == set(), f"layers naming no module: {sorted(named - top)}"


def test_readme_lists_the_contract_layers():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:", 1)[1].split("\n\n", 1)[0]
    readme = [re.sub(r"`", "", m.group(1)).strip() for m in re.finditer(r"^\d+\. (.+?) — ", block, re.M)]
    contract = [line.replace("lvmbench.", "") for line in contract_layers()]
    assert readme == contract


def _function_imports() -> list[tuple[str, int, str, bool]]:
    """(file, line, module, has a reason comment) of every import inside a function, outside the CLI."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("lvmbench/cli/"):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    mod = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                    here, above = lines[inner.lineno - 1], lines[inner.lineno - 2].strip() if inner.lineno > 1 else ""
                    out.append((rel, inner.lineno, mod or "", "#" in here or above.startswith("#")))
    return sorted(set(out))


def test_imports_inside_functions_are_optional_heavy_packages_with_a_reason():
    found = _function_imports()
    wrong = [f"{f}:{n} {m}" for f, n, m, _ in found if m.split(".")[0] not in OPTIONAL]
    assert not wrong, "imports inside functions of required or own modules (move them to the top):\n" + "\n".join(wrong)
    silent = [f"{f}:{n} {m}" for f, n, m, why in found if not why]
    assert not silent, "say why each is imported late (a comment on the line or the line above):\n" + "\n".join(silent)
    assert len(found) <= MAX_FUNCTION_IMPORTS, len(found)


def test_no_module_is_longer_than_450_lines():
    long = {p.relative_to(ROOT).as_posix(): n for p in PKG.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_every_module_imports():
    """A module only a lazy path reaches (the pretrainer behind its command) still imports: a
    renamed or moved name fails here, not in a user's run."""
    import importlib

    names = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in PKG.rglob("*.py") if p.name != "__main__.py")
    broken = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - every failure is listed
            broken[name] = f"{e.__class__.__name__}: {e}"
    assert not broken, broken
