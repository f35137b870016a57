"""A plugin package from outside lvmbench: an encoder, a reader and a task folder registered through
entry points (an ``importlib.metadata`` dist-info folder on the path of a child process, so the
test venv is never changed), run as a user would: ``tasks``, ``readers``, ``suites``, ``data
verify``, ``eval`` on the plugin's own suite and on the smoke suite from a sample shipped in the
package. A malformed plugin task.yaml is listed as broken and spoils nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PLUGIN = '''
"""lvmbench demo plugin: one encoder, one reader, one task folder."""
from pathlib import Path

import numpy as np
from pydantic import Field
from torch import nn

from lvmbench.data.cases import Case, DatasetReader
from lvmbench.data.imageio import read_image
from lvmbench.data.reader_options import ReaderOptions
from lvmbench.encoders.base import Encoder, FeatureInfo, InputSpec

TASKS = str(Path(__file__).parent / "tasks")
SUITES = {"demo-extra": {"description": "the demo plugin's own tasks"}}


class TinyEncoder(Encoder):
    def __init__(self, in_channels: int):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.feature_info = FeatureInfo(channels=(8, 16), strides=(2, 4))
        self.embed_dim = 16
        self.input_spec = InputSpec(channels=in_channels, mean=(0.5,) * in_channels, std=(0.25,) * in_channels, size=16)

    def feature_maps(self, x):
        a = self.a(x)
        return [a, self.b(a)]


def build_encoder(weights, in_channels: int = 3):
    return TinyEncoder(in_channels)


class ListOptions(ReaderOptions):
    list: str = Field("list.txt", description="lines '<image> <label index>'")


class ListReader(DatasetReader):
    """Images listed in a text file with their label index."""

    kind = "classification"
    Options = ListOptions
    example = {"reader": "demo_list", "dir": "demo_data", "options": {"list": "list.txt"}}

    def __init__(self, root, list="list.txt", **options):
        super().__init__(root, **options)
        self.list = list

    def cases(self):
        self.require_root("point --data-root at the demo data")
        out = []
        for line in (self.root / self.list).read_text().split("\\n"):
            if line.strip():
                name, label = line.split()
                out.append(Case(id=name, group=name, image=name, label=int(label), files=(name,)))
        return out

    def load_image(self, case):
        return read_image(self.root / case.image, "L")
'''

TASK = """\
id: demo_cls
title: demo plugin task (grey images, a plugin reader and encoder)
family: classification
modality: synthetic
classes: [a, b]
data: {reader: demo_list, dir: demo_data, options: {list: list.txt}}
split: {source: rule, val: 0.25, test: 0.25, seed: 0, group_by: case}
preprocess: {size: 16, channels: 1, intensity: unit}
protocols:
  knn: {ks: [3]}
  linear: {epochs: 3, batch_size: 8, lrs: [0.01]}
default_protocols: [knn, linear]
primary_metric: accuracy
suites: [demo-extra]
profiles:
  smoke: {data: {dir: sample, location: task_folder, limit: 20}, protocols: {linear: {epochs: 30, lrs: [0.03]}}}
"""

ENTRY_POINTS = """\
[lvmbench.encoders]
demo-tiny = demo_plugin:build_encoder

[lvmbench.readers]
demo_list = demo_plugin:ListReader
demo_broken = demo_plugin_missing:Reader

[lvmbench.tasks]
demo = demo_plugin:TASKS

[lvmbench.suites]
demo = demo_plugin:SUITES
"""

DRIVER = """\
import contextlib, io, json, sys
from lvmbench import cli
out = []
for argv in json.loads(sys.argv[1]):
    so, se = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        sys.argv = ["lvmbench", *argv]
        try:
            cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
    out.append({"argv": argv, "code": code, "out": so.getvalue(), "err": se.getvalue()})
print(json.dumps(out))
"""


def _images(folder: Path, n: int, seed: int) -> str:
    """Grey 20 px images: class a bright at the top, class b at the bottom; returns the list file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        label = i % 2
        img = rng.integers(0, 40, (20, 20)).astype(np.uint8)
        img[(0 if label == 0 else 10):(10 if label == 0 else 20)] += 160
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
        lines.append(f"img{i:03d}.png {label}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "list.txt"


def make_plugin(site: Path) -> None:
    pkg = site / "demo_plugin"
    (pkg / "tasks" / "demo_cls").mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    (pkg / "tasks" / "demo_cls" / "task.yaml").write_text(TASK, encoding="utf-8")
    _images(pkg / "tasks" / "demo_cls" / "sample", 24, seed=1)  # a small sample shipped for the smoke profile
    (pkg / "tasks" / "demo_bad").mkdir()
    (pkg / "tasks" / "demo_bad" / "task.yaml").write_text(TASK.replace("demo_cls", "demo_bad").replace("primary_metric: accuracy", "primary_metric: acuracy"), encoding="utf-8")
    dist = site / "demo_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo_plugin\nVersion: 0.1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    (dist / "top_level.txt").write_text("demo_plugin\n", encoding="utf-8")


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("plugin")
    make_plugin(base / "site")
    _images(base / "data" / "demo_data", 40, seed=0)
    results, cache = base / "results", base / "cache"
    common = ["--results", str(results), "--cache-dir", str(cache), "--no-progress"]
    commands = [
        ["tasks"],
        ["readers", "demo_list"],
        ["suites"],
        ["readers", "demo_broken"],
        ["data", "verify", "demo_cls", "--suite", "demo-extra", "--data-root", str(base / "data"), "--no-progress"],
        ["eval", "--encoder", "demo-tiny", "--suite", "demo-extra", "--data-root", str(base / "data"), *common],
        ["eval", "--encoder", "demo-tiny", "--tasks", "demo_cls", "--data-root", str(base / "data"), *common],
        ["eval", "--encoder", "demo-tiny", "--suite", "smoke", "--tasks", "demo_cls", *common],
        ["eval", "--help"],
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(base / "site"), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1", "LVMBENCH_CACHE": str(cache)}
    env.pop("LVMBENCH_TASK_PATH", None)
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands)], capture_output=True, text=True, env=env, timeout=600, cwd=base)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads(r.stdout.strip().splitlines()[-1])
    names = ["tasks", "readers", "suites", "broken-reader", "verify", "eval-own-suite", "eval-lvmmed", "eval-smoke", "eval-help"]
    return base, dict(zip(names, runs))


def test_plugin_task_reader_encoder_and_suite_are_listed(plugin_run):
    _, runs = plugin_run
    tasks = runs["tasks"]
    assert "demo_cls" in tasks["out"] and "demo-extra" in tasks["out"] and "kvasir_seg" in tasks["out"]
    broken = [ln for ln in tasks["err"].splitlines() if ln.strip()]
    assert tasks["code"] == 2 and len(broken) == 1, tasks["err"]  # one line for the malformed task, the rest listed
    assert "task 'demo_bad' is broken" in broken[0] and "demo_bad/task.yaml" in broken[0] and "did you mean 'accuracy'?" in broken[0]
    readers = runs["readers"]
    assert readers["code"] == 0 and "## demo_list (classification)" in readers["out"] and "| list " in readers["out"] and "reader: demo_list" in readers["out"]
    broken = runs["broken-reader"]  # a plugin that does not import spoils its own name only
    assert broken["code"] == 2 and broken["err"].count("\n") == 1 and "plugin reader 'demo_broken' from demo_plugin 0.1.0 failed to load (ModuleNotFoundError" in broken["err"]
    suites = runs["suites"]["out"]
    line = next(ln for ln in suites.splitlines() if ln.startswith("demo-extra"))
    assert "demo_plugin 0.1.0" in line and "demo_cls" in line


def test_plugin_task_verifies_and_runs_in_its_own_suite(plugin_run):
    base, runs = plugin_run
    verify = runs["verify"]
    assert verify["code"] == 0 and "demo_cls" in verify["out"] and "ready" in verify["out"], verify["out"] + verify["err"]
    ev = runs["eval-own-suite"]
    assert ev["code"] == 0 and "2 done" in ev["err"] and "0 failed" in ev["err"], ev["err"]
    rec = json.loads((base / "results/demo-extra/demo-tiny/random-init/demo_cls/knn-s0.json").read_text(encoding="utf-8"))
    assert rec["origin"]["package"] == "demo_plugin 0.1.0" and rec["origin"]["folder"].endswith("demo_plugin/tasks/demo_cls")
    assert rec["origin"]["plugins"] == {"demo_plugin": "0.1.0"} and rec["versions"]["demo_plugin"] == "0.1.0"
    assert not (base / "results" / "lvmmed").exists(), "a plugin task never lands in the LVM-Med tables"
    # --no-progress still says something per epoch and per unit
    assert "epoch 3/3  demo-extra/demo-tiny/random-init/demo_cls/linear-s0.json" in ev["err"] and "done  demo-extra/demo-tiny" in ev["err"]


def test_plugin_task_is_refused_outside_its_suites(plugin_run):
    _, runs = plugin_run
    wrong = runs["eval-lvmmed"]
    assert wrong["code"] == 2 and "task 'demo_cls' belongs to suite(s) demo-extra, smoke, not 'lvmmed'" in wrong["err"] and "fix: run it with --suite demo-extra" in wrong["err"]


def test_plugin_smoke_profile_runs_on_the_sample_it_ships(plugin_run):
    base, runs = plugin_run
    smoke = runs["eval-smoke"]
    assert smoke["code"] == 0, smoke["err"]
    for unit in ("knn-s0", "linear-s0"):
        rec = json.loads((base / f"results/smoke/demo-tiny/random-init/demo_cls/{unit}.json").read_text(encoding="utf-8"))
        assert sum(rec["counts"].get(k, 0) for k in ("train", "val", "test")) == 20  # data.limit of the smoke profile
        assert rec["primary"] > rec["extra"]["baseline"]["value"] + 0.05  # the smoke suite's own check passed


def test_one_channel_task_tells_the_plugin_encoder(plugin_run):
    base, _ = plugin_run
    rec = json.loads((base / "results/demo-extra/demo-tiny/random-init/demo_cls/linear-s0.json").read_text(encoding="utf-8"))
    assert rec["primary"] > 0.5  # a 1-channel task ran on the plugin's 1-channel encoder


def test_channel_mismatch_is_one_line_before_training():
    import torch

    from lvmbench.encoders import create_encoder
    from lvmbench.encoders.channels import channel_problem, check_channels
    from lvmbench.errors import UserError
    from lvmbench.spec import TaskSpec

    enc, _ = create_encoder("resnet18")
    task = TaskSpec.model_validate({"id": "grey", "title": "t", "family": "classification", "modality": "x", "classes": ["a", "b"], "data": {"reader": "class_folders", "dir": "d"},
                                    "preprocess": {"channels": 1}, "protocols": {"knn": {}}, "primary_metric": "accuracy"})
    with pytest.raises(UserError) as e:
        check_channels(enc, "resnet18", task)
    assert "takes 3-channel input and the task gives 1 channel(s)" in str(e.value) and "preprocess.channels: 3" in str(e.value)
    assert channel_problem(enc, 1, "segmentation") is None  # the U-Net sums the RGB kernels
    with pytest.raises(RuntimeError):  # what the line replaces: torch's own error, mid-run
        enc.embed(torch.zeros(1, 1, 32, 32))


def test_eval_help_lists_every_suite_and_smoke_writes_only_the_data_it_runs(plugin_run):
    base, runs = plugin_run
    text = " ".join(runs["eval-help"]["out"].replace("│", " ").split())
    assert runs["eval-help"]["code"] == 0 and "--suite" in text
    for name in ("lvmmed", "smoke", "shared-data", "demo-extra"):  # built in, and the plugin's
        assert name in text, text
    # the plugin task's smoke profile reads a sample in its own folder: no synthetic dataset written
    roots = list((base / "cache").glob("synth-v*"))
    assert all(not [p for p in r.iterdir() if p.is_dir()] for r in roots), [list(r.iterdir()) for r in roots]
