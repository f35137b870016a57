"""Runner: results written once, reruns skip, shards partition, the feature cache is hit."""

from __future__ import annotations

import json

import pytest

from lvmbench.encoders.adapters import TorchvisionResNet
from lvmbench.errors import UserError
from lvmbench.leaderboard import build
from lvmbench.results import Claim, iter_results, result_path
from lvmbench.runner import EvalRequest, parse_shard, plan, run
from lvmbench.spec import RunOptions


def request(tmp_path, synth_root, cache_dir, **kw):
    base = dict(
        encoder="resnet18",
        suite="smoke",
        tasks=["brain_tumor_linear"],
        protocols=["linear", "knn"],
        data_root=synth_root,
        results=tmp_path / "results",
        cache_dir=cache_dir,
        run=RunOptions(progress=False, workers=0),
    )
    base.update(kw)
    return EvalRequest(**base)


@pytest.fixture
def count_forward(monkeypatch):
    calls = {"n": 0}
    orig = TorchvisionResNet.embed

    def counting(self, x):
        calls["n"] += 1
        return orig(self, x)

    monkeypatch.setattr(TorchvisionResNet, "embed", counting)
    return calls


def test_run_then_rerun_skips_and_hits_feature_cache(tmp_path, synth_root, cache_dir, count_forward):
    req = request(tmp_path, synth_root, cache_dir, heads=["linear", "mlp"])
    s1 = run(req, log=lambda s: None)
    n_units = len(plan(req)[0])  # linear with each of the task's heads + knn
    assert n_units >= 3 and s1.ok and len(s1.done) == n_units
    first = count_forward["n"]
    assert first > 0
    # The three units share one feature extraction: the 2nd and 3rd unit hit the cache.
    n_batches_one_pass = first
    files = sorted(p for p, _ in iter_results(req.results))
    assert len(files) == n_units
    before = {p: p.read_bytes() for p in files}

    s2 = run(req, log=lambda s: None)
    assert s2.done == [] and len(s2.skipped) == n_units
    assert count_forward["n"] == first, "a rerun must not run the encoder"
    assert {p: p.read_bytes() for p in files} == before

    # --overwrite recomputes units, but features come from the cache
    s3 = run(request(tmp_path, synth_root, cache_dir, overwrite=True, heads=["linear", "mlp"]), log=lambda s: None)
    assert len(s3.done) == n_units
    assert count_forward["n"] == n_batches_one_pass, "second run must reuse cached features"


def test_result_record_contents(tmp_path, synth_root, cache_dir):
    req = request(tmp_path, synth_root, cache_dir, protocols=["knn"], seeds=[1])
    run(req, log=lambda s: None)
    (path, rec), = list(iter_results(req.results))
    assert path.name == "knn-s1.json" and path.parent.name == "brain_tumor_linear"
    assert rec.unit.weights_sha256 == "random-init" and rec.unit.seed == 1
    assert rec.primary == rec.metrics["accuracy"]
    assert rec.counts["test"] == len([c for c in rec.per_case])
    assert rec.split_hash and rec.versions["torch"] and rec.device.startswith("cpu")
    assert rec.hyperparameters["selected"]["k"] in rec.hyperparameters["ks"]
    assert rec.primary > 0.5, "synthetic classes are learnable: well above chance (0.25)"


def test_shards_partition_the_plan(tmp_path, synth_root, cache_dir):
    full, _ = plan(request(tmp_path, synth_root, cache_dir, seeds=[0, 1, 2]))
    keys = {p.unit.key() for p in full}
    parts = [plan(request(tmp_path, synth_root, cache_dir, seeds=[0, 1, 2], shard=(i, 3)))[0] for i in range(3)]
    got = [p.unit.key() for part in parts for p in part]
    assert sorted(got) == sorted(keys) and len(got) == len(set(got))
    with pytest.raises(UserError):
        parse_shard("3/3")


def test_corrupt_result_is_recomputed_and_busy_unit_is_left_alone(tmp_path, synth_root, cache_dir):
    req = request(tmp_path, synth_root, cache_dir, protocols=["knn"])
    run(req, log=lambda s: None)
    (path, _), = list(iter_results(req.results))
    path.write_text("{ truncated", encoding="utf-8")
    lines = []
    build(req.results, warn=lines.append)
    assert any("corrupt result file" in line for line in lines)
    s = run(req, log=lambda s: None)
    assert len(s.done) == 1 and json.loads(path.read_text(encoding="utf-8"))["unit"]["protocol"] == "knn"
    # a live claim by another process makes the runner skip the unit
    planned, _ = plan(req)
    claim = Claim(result_path(req.results, planned[0].unit))
    path.unlink()
    assert claim.acquire()
    try:
        s = run(req, log=lambda s: None)
        assert s.busy and not s.done
    finally:
        claim.release()


def test_stale_claim_from_dead_process_is_taken_over(tmp_path):
    target = tmp_path / "a" / "unit.json"
    c = Claim(target)
    c.lock.parent.mkdir(parents=True)
    import socket

    c.lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}), encoding="utf-8")
    assert c.acquire()
    c.release()
    assert not c.lock.exists()


def test_leaderboard_is_byte_identical(tmp_path, synth_root, cache_dir):
    req = request(tmp_path, synth_root, cache_dir, seeds=[0, 1], heads=["linear"])
    run(req, log=lambda s: None)
    a = build(req.results)
    b = build(req.results)
    assert a == b
    assert "| brain_tumor_linear" in a and "| linear " in a and "(n=2)" in a and "Smoke suite" in a
