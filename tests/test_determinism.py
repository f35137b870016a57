"""Determinism on CPU: the same `lvmbench eval` twice (fresh processes, fresh caches) gives identical
metrics and per-case scores; a rerun on a warm cache matches too; and the result records what
else could move the numbers (threads, determinism flags, data fingerprint, cache versions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import tiny_task_dir, write_class_folders  # noqa: F401

from lvmbench.results import iter_results
from lvmbench.spec import RunOptions

pytestmark = pytest.mark.usefixtures("one_thread")

PROTOCOLS = "knn,linear,finetune"


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    base = tmp_path_factory.mktemp("determinism")
    tiny_task_dir(base / "tasks", "w8det", "w8det")
    write_class_folders(base / "data" / "w8det")
    procs = []
    for name in ("a", "b"):
        env = {**os.environ, "LVMBENCH_TASK_PATH": str(base / "tasks"), "LVMBENCH_CACHE": str(base / f"cache-{name}"), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "lvmbench.cli", "eval", "--encoder", "resnet18", "--suite", "lvmmed", "--tasks", "w8det", "--protocol", PROTOCOLS, "--data-root", str(base / "data"), "--results", str(base / f"results-{name}"), "--no-progress"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out = p.communicate(timeout=600)[0]
        assert p.returncode == 0, out
    return base


def _records(results: Path) -> dict[str, dict]:
    out = {}
    for path, rec in iter_results(results):
        assert not isinstance(rec, Exception), rec
        out[path.relative_to(results).as_posix()] = json.loads(rec.model_dump_json())
    return out


def _numbers(doc: dict) -> dict:
    """Everything a rerun must reproduce (not timings, timestamps or paths)."""
    return {k: doc[k] for k in ("primary", "metrics", "per_case", "hyperparameters", "counts", "split_hash", "flags", "runtime")}


def test_same_command_twice_gives_identical_results(twice):
    a, b = _records(twice / "results-a"), _records(twice / "results-b")
    assert sorted(a) == sorted(b) and len(a) == 3
    for key in a:
        assert _numbers(a[key]) == _numbers(b[key]), key
        assert a[key]["extra"] == b[key]["extra"], key  # selection histories, too


def test_warm_cache_rerun_matches(twice):
    """Cached features and decoded images are transparent: --overwrite on a warm cache, in this process."""
    from lvmbench.runner import EvalRequest, run
    from lvmbench.tasks import TASKS, load_task_file

    spec = load_task_file(twice / "tasks" / "w8det" / "task.yaml")
    TASKS.names()
    TASKS.add(spec.id, spec)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the first runs
        results = twice / "results-a"
        before = _records(results)
        req = EvalRequest(encoder="resnet18", suite="lvmmed", tasks=["w8det"], protocols=["knn", "linear"], data_root=twice / "data", results=results, cache_dir=twice / "cache-a", overwrite=True, run=RunOptions(progress=False))
        s = run(req, log=lambda s: None)
        assert len(s.done) == 2
        after = _records(results)
    finally:
        torch.set_num_threads(threads)
        TASKS._items.pop(spec.id, None)
    for key in after:
        want, got = _numbers(before[key]), _numbers(after[key])
        for volatile in ("loader_workers", "env"):  # in-process: no OMP_NUM_THREADS, workers from the request
            want["runtime"].pop(volatile), got["runtime"].pop(volatile)
        assert got == want, key


def test_the_record_says_what_could_move_the_numbers(twice):
    rec = next(iter(_records(twice / "results-a").values()))
    rt = rec["runtime"]
    assert rt["torch_threads"] == 1 and rt["env"]["OMP_NUM_THREADS"] == "1"
    for key in ("torch_interop_threads", "cpu_capability", "deterministic_algorithms", "cudnn_benchmark", "tf32_matmul", "float32_matmul_precision", "amp", "loader_workers", "preprocess_version", "data_fingerprint", "split_origin", "task_spec_sha256", "train_subset_sha256"):
        assert key in rt, key
    for pkg in ("torch", "numpy", "pillow", "scikit-learn"):
        assert rec["versions"][pkg]


def test_fingerprint_and_threads_change_when_their_inputs_do(tmp_path):
    from types import SimpleNamespace

    from lvmbench.data.cases import make_reader
    from lvmbench.data.fingerprint import data_fingerprint
    from lvmbench.data.splits import Split
    from lvmbench.runner.record import runtime_info
    from lvmbench.spec import RunOptions, TaskSpec

    root = write_class_folders(tmp_path / "d")
    reader = make_reader("class_folders", root, {"splits": ["Training", "Testing"], "classes": ["a", "b"]})
    cases = reader.cases()
    data = SimpleNamespace(reader=reader, root=root, ood=[], split=Split([c for c in cases if "Training" in c.id], [], [c for c in cases if "Testing" in c.id]))
    fp = data_fingerprint(data)
    assert data_fingerprint(data) == fp
    p = root / "Testing" / "a" / "a00.png"
    p.write_bytes(p.read_bytes() + b"\0")  # a re-exported file
    assert data_fingerprint(data) != fp
    task = TaskSpec.model_validate({"id": "t", "title": "t", "family": "classification", "modality": "x", "classes": ["a", "b"], "data": {"reader": "class_folders", "dir": "d"}, "protocols": {"knn": {}}, "primary_metric": "accuracy"})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = runtime_info(torch.device("cpu"), RunOptions(), task, data, fp, False)
        torch.set_num_threads(2)
        two = runtime_info(torch.device("cpu"), RunOptions(), task, data, fp, False)
    finally:
        torch.set_num_threads(threads)
    assert one["torch_threads"] == 1 and two["torch_threads"] == 2
