"""Recall@K / R-precision / MAP@R vs brute force and pytorch-metric-learning; the retrieval protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lvmbench.metrics.retrieval import recall_at_k, retrieval_metrics
from lvmbench.spec import RunOptions


def brute_recall(x: np.ndarray, y: np.ndarray, k: int) -> tuple[float, int]:
    """Sort every other item by cosine; ties go to same-class items first (RetMetric's strict >)."""
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    hits, lone = [], 0
    for i in range(len(z)):
        others = [j for j in range(len(z)) if j != i]
        if not any(y[j] == y[i] for j in others):
            lone += 1
            continue
        order = sorted(others, key=lambda j: (-float(z[i] @ z[j]), y[j] != y[i]))
        hits.append(any(y[j] == y[i] for j in order[:k]))
    return float(np.mean(hits)), lone


def brute_map_r(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    rps, aps = [], []
    for i in range(len(z)):
        others = [j for j in range(len(z)) if j != i]
        r = sum(y[j] == y[i] for j in others)
        if r == 0:
            continue
        order = sorted(others, key=lambda j: -float(z[i] @ z[j]))[:r]
        rel = [float(y[j] == y[i]) for j in order]
        rps.append(sum(rel) / r)
        aps.append(sum(rel[t] * sum(rel[: t + 1]) / (t + 1) for t in range(r)) / r)
    return float(np.mean(rps)), float(np.mean(aps))


def _data(seed: int, n: int = 60, d: int = 8, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(classes, d))[y]
    y[-1] = classes + 7  # a lone query: no other item of its class
    return x, y


@pytest.mark.parametrize("seed", range(4))
def test_recall_matches_brute_force(seed: int) -> None:
    x, y = _data(seed)
    res = retrieval_metrics(x, y, ks=(1, 2, 4, 8), chunk=17)  # chunking exercised
    m = res.metrics()
    for k in (1, 2, 4, 8):
        want, lone = brute_recall(x, y, k)
        assert abs(m[f"recall@{k}"] - want) < 1e-12
    assert int((~res.has_positive).sum()) == lone == 1
    rp, ap = brute_map_r(x, y)
    assert abs(m["r_precision"] - rp) < 1e-12 and abs(m["map@r"] - ap) < 1e-12
    assert recall_at_k(x, y, (1, 8)) == {1: m["recall@1"], 8: m["recall@8"]}


def brute_grouped(x: np.ndarray, y: np.ndarray, g: np.ndarray, k: int) -> tuple[float, float, float, int]:
    """Recall@K, R-precision, MAP@R with every item of the query's group left out of its gallery."""
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    hits, rps, aps, lone = [], [], [], 0
    for i in range(len(z)):
        gallery = [j for j in range(len(z)) if g[j] != g[i]]
        r = sum(y[j] == y[i] for j in gallery)
        if r == 0:
            lone += 1
            continue
        order = sorted(gallery, key=lambda j: (-float(z[i] @ z[j]), y[j] != y[i]))
        hits.append(any(y[j] == y[i] for j in order[:k]))
        top = sorted(gallery, key=lambda j: -float(z[i] @ z[j]))[:r]
        rel = [float(y[j] == y[i]) for j in top]
        rps.append(sum(rel) / r)
        aps.append(sum(rel[t] * sum(rel[: t + 1]) / (t + 1) for t in range(r)) / r)
    return float(np.mean(hits)), float(np.mean(rps)), float(np.mean(aps)), lone


def _patients(seed: int, n_pat: int = 18, per: int = 4, d: int = 8, classes: int = 4):
    """Several images per patient, each patient one class, images of a patient close together
    (a patient effect larger than the class effect): a same-patient neighbour is nearly always
    the nearest one."""
    rng = np.random.default_rng(seed)
    yp = rng.integers(0, classes, n_pat)
    centre = 1.0 * rng.normal(size=(classes, d))[yp] + 2.0 * rng.normal(size=(n_pat, d))
    x = np.repeat(centre, per, axis=0) + 0.3 * rng.normal(size=(n_pat * per, d))
    # a near-copy of patient 0's first image filed under patient 1: groups, not pixels, decide the
    # mask (an exact copy would tie, and MAP@R orders ties arbitrarily; PML ranks in float32)
    x[per] = x[0] + 1e-2 * rng.normal(size=d)
    g = np.repeat([f"p{i:02d}" for i in range(n_pat)], per)
    return x, np.repeat(yp, per), g


@pytest.mark.parametrize("seed", range(3))
def test_recall_masks_the_querys_group(seed: int) -> None:
    x, y, g = _patients(seed)
    res = retrieval_metrics(x, y, ks=(1, 2, 4, 8), chunk=13, groups=g)
    m = res.metrics()
    for k in (1, 2, 4, 8):
        r, rp, ap, lone = brute_grouped(x, y, g, k)
        assert abs(m[f"recall@{k}"] - r) < 1e-12
    assert abs(m["r_precision"] - rp) < 1e-12 and abs(m["map@r"] - ap) < 1e-12
    assert int((~res.has_positive).sum()) == lone
    assert recall_at_k(x, y, (1,), groups=g)[1] == m["recall@1"]
    # ungrouped, a patient's other images are found first: the unmasked score is inflated
    assert retrieval_metrics(x, y, ks=(1,)).metrics()["recall@1"] > m["recall@1"] + 0.1
    # one group per item is the ungrouped metric
    same = retrieval_metrics(x, y, groups=[str(i) for i in range(len(y))]).metrics()
    assert same == retrieval_metrics(x, y).metrics()


def test_grouped_recall_matches_pml_per_query_gallery() -> None:
    """PML has no group mask; ask it query by query with the gallery = items outside the group."""
    ac = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    inf = pytest.importorskip("pytorch_metric_learning.utils.inference")
    dist = pytest.importorskip("pytorch_metric_learning.distances")
    x, y, g = _patients(5)
    calc = ac.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        knn_func=inf.CustomKNN(dist.CosineSimilarity()),
        device=torch.device("cpu"),
    )
    res = retrieval_metrics(x, y, groups=g)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    p1, rp, ap = [], [], []
    for i in range(len(y)):
        keep = torch.from_numpy(g != g[i])
        if not bool((yt[keep] == yt[i]).any()):
            assert not res.has_positive[i]
            continue
        ref = calc.get_accuracy(xt[i : i + 1], yt[i : i + 1], xt[keep], yt[keep], ref_includes_query=False)
        p1.append(ref["precision_at_1"])
        rp.append(ref["r_precision"])
        ap.append(ref["mean_average_precision_at_r"])
    assert len(p1) == int(res.has_positive.sum()) > 0
    assert np.allclose(res.hits[res.has_positive, 0], p1, atol=1e-12)
    assert np.allclose(res.r_precision[res.has_positive], rp, atol=1e-9)
    assert np.allclose(res.map_at_r[res.has_positive], ap, atol=1e-9)


def test_ties_count_as_hits() -> None:
    # query 0's best positive (item 1) and a negative (item 2) are equally similar: a hit at K=1
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.2]])
    y = np.array([0, 0, 1, 1])
    res = retrieval_metrics(x, y, ks=(1,))
    assert bool(res.hits[0, 0])
    assert brute_recall(x, y, 1)[0] == res.metrics()["recall@1"]


def test_matches_pml_accuracy_calculator() -> None:
    ac = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    inf = pytest.importorskip("pytorch_metric_learning.utils.inference")
    dist = pytest.importorskip("pytorch_metric_learning.distances")
    for seed in range(3):
        x, y = _data(seed)
        calc = ac.AccuracyCalculator(
            include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
            knn_func=inf.CustomKNN(dist.CosineSimilarity()),
            device=torch.device("cpu"),
        )
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        ref = calc.get_accuracy(xt, yt, xt, yt, ref_includes_query=True)
        m = retrieval_metrics(x, y).metrics()
        assert abs(m["recall@1"] - ref["precision_at_1"]) < 1e-9
        assert abs(m["r_precision"] - ref["r_precision"]) < 1e-9
        assert abs(m["map@r"] - ref["mean_average_precision_at_r"]) < 1e-9


def test_perfect_and_invariant() -> None:
    y = np.repeat(np.arange(4), 5)
    x = np.eye(4)[y] + 1e-3 * np.random.default_rng(0).normal(size=(20, 4))
    m = retrieval_metrics(x, y).metrics()
    assert m["recall@1"] == 1.0 and m["map@r"] == 1.0
    x2, y2 = _data(1)
    a = retrieval_metrics(x2, y2).metrics()
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
    b = retrieval_metrics(3.0 * x2 @ q, y2).metrics()  # cosine: rotation and scale invariant
    assert all(abs(a[k] - b[k]) < 1e-9 for k in a)


def test_retrieval_protocol_end_to_end(synth_root, tmp_path, monkeypatch) -> None:
    import lvmbench.protocols.retrieval as proto
    from lvmbench.runner import EvalRequest, run

    seen: list = []
    real = proto.retrieval_metrics
    monkeypatch.setattr(proto, "retrieval_metrics", lambda *a, **kw: seen.append(kw.get("groups")) or real(*a, **kw))

    req = EvalRequest(
        encoder="resnet18",
        suite="smoke",
        tasks=["brain_tumor_linear"],
        protocols=["retrieval"],
        data_root=synth_root,
        results=tmp_path / "results",
        cache_dir=tmp_path / "cache",
        run=RunOptions(progress=False, workers=0))
    summary = run(req, log=lambda s: None)
    assert summary.ok and len(summary.done) == 1
    rec = json.loads(next((tmp_path / "results").rglob("retrieval-s0.json")).read_text(encoding="utf-8"))
    assert rec["primary_metric"] == "recall@1"
    m = rec["metrics"]
    assert 0.0 <= m["recall@1"] <= m["recall@2"] <= m["recall@4"] <= m["recall@8"] <= 1.0
    assert "ms_head/recall@1" in m and rec["hyperparameters"]["selected"]["ms_preset"] == "pml"
    # selection used validation only: the history holds validation scores of every epoch
    assert [h["epoch"] for h in rec["extra"]["val_history"]] == list(range(0, rec["hyperparameters"]["head_epochs"] + 1))
    assert len(rec["per_case"]) == m["queries"]
    assert abs(np.mean([c["score"] for c in rec["per_case"]]) - m["recall@1"]) < 1e-9
    # structured synthetic classes: even a random-init encoder retrieves above chance (1/4)
    assert m["recall@1"] > 0.4
    # every call (raw test, validation selection, head on test) masks the query's group
    assert seen and all(g is not None for g in seen)
    assert {c["group"] for c in rec["per_case"]} <= set(seen[0])
