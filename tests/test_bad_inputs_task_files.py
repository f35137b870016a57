"""Task files from strangers: YAML alias bombs, anchors, merge keys, deep nesting and huge files are
refused in one line naming the file, before they can expand or exhaust the machine."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import write_class_folders
from cli_helpers import the_line

from lvmbench.errors import UserError
from lvmbench.tasks import load_task_file


def billion_laughs(levels: int = 9) -> str:
    """A valid task whose data.options hold 10**levels strings through nested aliases."""
    anchors = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    anchors += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return TASK.format(id="bomb", options="{" + ", ".join(anchors) + "}")


TASK = """\
id: {id}
title: a task file from a stranger
family: classification
modality: synthetic
classes: [a, b]
data: {{reader: class_folders, dir: {id}, options: {options}}}
split: {{source: rule, group_by: case}}
preprocess: {{size: 16}}
protocols:
  knn: {{ks: [3]}}
default_protocols: [knn]
primary_metric: accuracy
suites: []
"""


def write_task(folder: Path, task_id: str, text: str) -> Path:
    (folder / task_id).mkdir(parents=True, exist_ok=True)
    path = folder / task_id / "task.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_billion_laughs_is_refused_before_it_expands(tmp_path):
    path = write_task(tmp_path, "bomb", billion_laughs())
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        load_task_file(path)
    assert time.perf_counter() - t0 < 2.0
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "anchors and aliases" in msg and "line 6" in msg and "fix:" in msg


@pytest.mark.parametrize(
    "options, needle",
    [
        ("{a: &x 1}", "anchors and aliases"),  # an anchor alone: refused where it is written
        ("{a: [1, 2], b: *y}", "anchors and aliases"),  # an undefined alias
        ("{base: &b {k: 1}, other: {<<: *b}}", "anchors and aliases"),  # merge keys use aliases
        ("[" * 5000 + "]" * 5000, "nested deeper than"),  # RecursionError in PyYAML otherwise
    ],
    ids=["anchor", "alias", "merge", "deep"],
)
def test_task_file_yaml_tricks_are_one_line(options, needle, tmp_path):
    path = write_task(tmp_path, "trick", TASK.format(id="trick", options=options))
    with pytest.raises(UserError) as e:
        load_task_file(path)
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value)


def test_huge_task_file_is_refused_without_reading_it_all(tmp_path):
    text = TASK.format(id="huge", options="{}") + "# padding\n" * 120_000  # 1.2 MB, valid YAML
    path = write_task(tmp_path, "huge", text)
    with pytest.raises(UserError) as e:
        load_task_file(path)
    assert str(e.value).startswith(f"{path}: ") and "larger than 1 MB" in str(e.value) and "split.file" in str(e.value)
    assert load_task_file(write_task(tmp_path, "small", TASK.format(id="small", options="{}"))).id == "small"


def test_alias_bomb_on_the_task_path_stops_every_command_in_one_line(tmp_path):
    """End to end, in a process with a memory cap and a timeout: without the refusal, `eval` dies
    of MemoryError (uncapped: eats the machine) hashing the reader options, 10**9 strings."""
    tasks = tmp_path / "tasks"
    path = write_task(tasks, "bomb", billion_laughs())
    write_class_folders(tmp_path / "data" / "bomb", n_train=2, n_test=2)
    env = {**os.environ, "LVMBENCH_TASK_PATH": str(tasks), "LVMBENCH_CACHE": str(tmp_path / "cache")}

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))

    r = subprocess.run(
        [sys.executable, "-m", "lvmbench.cli", "eval", "--encoder", "resnet18", "--tasks", "bomb", "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=90, preexec_fn=cap_memory,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert the_line(r.stderr, "anchors and aliases").startswith(f"error: {path}: ")
