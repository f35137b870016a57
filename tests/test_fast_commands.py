"""Commands that train nothing answer without torch (issue 28, item 5), and the shortcut never
changes an answer.

- a no-op ``eval`` (every unit done) plans and triages on the protocols' declarations and the
  encoder facts a run cached; it prints what the full path prints, and steps aside (the full path
  runs) for anything else: a stale or unreadable result, a missing weights file, launcher options,
  a facts file that is missing, edited or written under other code;
- ``tasks``, ``protocols``, ``suites``, ``task check`` and ``status`` never import torch;
- each built-in protocol's implementation inherits its declaration and restates none of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import eval_rt

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nPROBE torch=%s\\n' % ('torch' in sys.modules)))\n"
    "sys.argv = ['lvmbench', *sys.argv[1:]]\n"
    "from lvmbench.cli import main\n"
    "main()\n"
)


def lvmbench(*args: str, cwd: Path = ROOT, timeout: int = 600) -> tuple[int, str, bool]:
    """Run the CLI in a fresh process (the environment as the test set it): exit code, stderr
    without the probe line, and whether torch was imported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stderr.splitlines()
    probe = [ln for ln in lines if ln.startswith("PROBE torch=")]
    assert probe, done.stderr[-2000:]
    err = "\n".join(ln for ln in lines if not ln.startswith("PROBE torch=")).strip()
    return done.returncode, err, probe[-1] == "PROBE torch=True"


def rt_args(tmp_path: Path, *extra: str) -> list[str]:
    """The same unit ``cli_helpers.eval_rt`` runs."""
    return ["eval", "--encoder", "resnet18", "--tasks", "rt", "--protocol", "knn", "--data-root", str(tmp_path / "data"),
            "--results", str(tmp_path / "results"), "--no-progress", "--workers", "0", *extra]


@pytest.fixture
def done_rt(tiny, monkeypatch, capsys, cache_dir):
    """``rt``'s kNN unit finished in-process: its result and the encoder facts are on disk."""
    code, _, err = eval_rt(monkeypatch, capsys, tiny)
    assert code == 0, err
    return tiny


def facts_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "encoder-facts").glob("*.json"))


def test_a_finished_grid_answers_without_torch_and_as_the_full_path_does(done_rt, cache_dir):
    (facts,) = facts_files(cache_dir)
    doc = json.loads(facts.read_text(encoding="utf-8"))
    assert doc["facts"] == {"known": True, "preset": False, "kind": "cnn", "info:0": {"pooling": "avg"}}
    code, quick, torch_loaded = lvmbench(*rt_args(done_rt))
    assert code == 0 and not torch_loaded, quick
    facts.unlink()  # the same command on the full path (it files the facts again)
    code, full, torch_loaded = lvmbench(*rt_args(done_rt))
    assert code == 0 and torch_loaded and facts_files(cache_dir)
    assert quick == full
    assert "0 done, 1 skipped (already done)" in quick and quick.startswith("skip  1 unit(s) already have results")


def test_a_stale_result_takes_the_full_path_which_says_so(done_rt):
    (result,) = (done_rt / "results").rglob("knn-s0.json")
    doc = json.loads(result.read_text(encoding="utf-8"))
    doc["identity"]["split"] = "0" * 16  # as if the split had changed since it ran
    result.write_text(json.dumps(doc), encoding="utf-8")
    code, err, torch_loaded = lvmbench(*rt_args(done_rt))
    assert code == 0 and torch_loaded
    assert "stale" in err and "1 done, 0 skipped" in err


def test_an_unreadable_result_takes_the_full_path(done_rt):
    (result,) = (done_rt / "results").rglob("knn-s0.json")
    result.write_text("{ not json", encoding="utf-8")
    code, err, torch_loaded = lvmbench(*rt_args(done_rt))
    assert code == 0 and torch_loaded and "redo" in err and "1 done" in err


@pytest.mark.parametrize("damage", ["garbage", "other-code", "wrong-kind", "fifo", "folder", "huge"])
def test_a_damaged_facts_file_is_never_trusted(done_rt, cache_dir, damage):
    (facts,) = facts_files(cache_dir)
    doc = json.loads(facts.read_text(encoding="utf-8"))
    if damage == "garbage":
        facts.write_text("\x00not json", encoding="utf-8")
    elif damage in ("fifo", "folder"):
        facts.unlink()
        os.mkfifo(facts) if damage == "fifo" else facts.mkdir()
    elif damage == "huge":
        facts.write_text(json.dumps(doc) + " " * (2 << 20), encoding="utf-8")
    elif damage == "other-code":
        doc["key"]["code"] = "0" * 64
        facts.write_text(json.dumps(doc), encoding="utf-8")
    else:  # a hand edit: another kind plans other settings, whose identity the result does not have
        doc["facts"]["kind"] = "transformer"
        facts.write_text(json.dumps(doc), encoding="utf-8")
    code, err, torch_loaded = lvmbench(*rt_args(done_rt), timeout=180)  # a FIFO read would block for ever
    assert code == 0 and "0 done, 1 skipped" in err, err
    if damage == "wrong-kind":
        return  # rt has no transformer block: the wrong kind plans the same settings, and the same answer
    assert torch_loaded
    if damage in ("fifo", "folder"):
        assert not facts.is_file()  # not the harness's file: left as it is (the facts are simply not kept)
    else:
        assert json.loads(facts.read_text(encoding="utf-8"))["facts"]["kind"] == "cnn"  # filed again, correctly


def test_what_the_shortcut_cannot_judge_is_left_to_the_full_path(done_rt):
    code, err, _ = lvmbench(*rt_args(done_rt, "--weights", str(done_rt / "nowhere.pth")))
    assert code != 0 and "weights file not found" in err and "Traceback" not in err
    code, err, _ = lvmbench(*rt_args(done_rt, "--partition", "gpu"))
    assert code != 0 and "--partition applies to --launcher slurm" in err
    code, err, torch_loaded = lvmbench(*rt_args(done_rt, "--overwrite"))
    assert code == 0 and torch_loaded and "1 done" in err
    code, err, _ = lvmbench(*rt_args(done_rt, "--dry-run"))
    assert code == 0


def test_facts_under_other_code_read_as_none(tmp_path, monkeypatch):
    from lvmbench.runner import facts

    f = facts.FactsFile(tmp_path, "resnet18", facts.RANDOM_INIT)
    f.put({"kind": "cnn"})
    assert facts.FactsFile(tmp_path, "resnet18", facts.RANDOM_INIT).get("kind") == "cnn"
    monkeypatch.setattr(facts, "code_digest", lambda: "edited")
    with pytest.raises(facts.NotCached):
        facts.FactsFile(tmp_path, "resnet18", facts.RANDOM_INIT).get("kind")
    facts.FactsFile(tmp_path, "resnet18", facts.RANDOM_INIT).put({"kind": "transformer"})  # replaces, does not pile up
    assert len(list((tmp_path / "encoder-facts").iterdir())) == 1


def test_facts_of_a_read_only_cache_are_skipped_not_fatal(tmp_path):
    from lvmbench.runner import facts

    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    f = facts.FactsFile(blocker, "resnet18", facts.RANDOM_INIT)
    f.put({"kind": "cnn"})  # its folder cannot exist: no error, nothing written
    assert blocker.read_text(encoding="utf-8") == "x" and not f.path.exists()


@pytest.mark.parametrize("args", [["tasks"], ["protocols"], ["suites"], ["task", "check", "tasks/brain_tumor_linear"], ["readers"]])
def test_catalog_commands_never_import_torch(args, cache_dir):
    code, err, torch_loaded = lvmbench(*args)
    assert code == 0, err
    assert not torch_loaded


def test_status_reads_the_cached_facts_without_torch(done_rt):
    code, err, torch_loaded = lvmbench("status", "--results", str(done_rt / "results"), "--data-root", str(done_rt / "data"))
    assert code == 0 and not torch_loaded, err


def test_every_implementation_inherits_its_declaration_and_restates_none_of_it():
    from lvmbench.protocols import declared
    from lvmbench.protocols.base import PROTOCOLS

    names = {cls.name for cls in declared.BUILTIN}
    assert names == set(declared.DECLARED.names()) == set(PROTOCOLS.names())
    for cls in declared.BUILTIN:
        impl = PROTOCOLS.get(cls.name)
        assert issubclass(impl, cls), cls.name
        for base in impl.__mro__:
            if base.__module__ == declared.__name__ or base is object:
                continue
            restated = {"name", "families", "uses_head", "Settings", "version", "volumes", "plan_settings", "primary_for"} & set(vars(base))
            assert not restated, f"{base.__qualname__} restates {restated}: declare it in lvmbench/protocols/declared.py"


def test_built_in_head_names_are_the_registered_heads():
    from lvmbench.heads import HEADS
    from lvmbench.protocols.settings import HEAD_MODELS

    assert set(HEAD_MODELS) <= set(HEADS.names())
