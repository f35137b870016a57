"""SIRL-style similarity queries: triplet agreement and odd-one-out accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvmbench.protocols.similarity_queries import (
    bootstrap_ci,
    odd_one_out_queries,
    odd_one_out_scores,
    reference_similarity,
    triplet_agreement,
    triplet_queries,
)


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _scores(z: np.ndarray, y: np.ndarray, name: str, count: int = 3000, seed: int = 0) -> tuple[float, float]:
    sref = reference_similarity(name, y)
    trip, _ = triplet_queries(sref, len(y), count, 1e-9, np.random.default_rng(seed))
    ooo, odd, _ = odd_one_out_queries(sref, len(y), count, 1e-9, np.random.default_rng(seed + 1))
    return float(triplet_agreement(_unit(z), trip, sref).mean()), float(odd_one_out_scores(_unit(z), ooo, odd).mean())


def test_ground_truth_embedding_scores_one() -> None:
    y = np.random.default_rng(0).integers(0, 5, 200)
    tas, ooa = _scores(np.eye(5)[y], y, "same_label")
    assert tas == 1.0 and ooa == 1.0
    # grades on a quarter circle: cosine decreases with grade distance, so it ranks like -|Δgrade|
    ang = y * (np.pi / 2) / 4
    tas, ooa = _scores(np.stack([np.cos(ang), np.sin(ang)], 1), y, "grade_distance")
    assert tas == 1.0 and ooa == 1.0


def test_random_embedding_is_at_chance() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    tas, ooa = _scores(rng.normal(size=(400, 32)), y, "same_label", count=6000)
    # binomial 99.9% band around chance for 6000 queries (per-anchor dependence widens it a bit)
    assert abs(tas - 0.5) < 4 * np.sqrt(0.25 / 6000) * 1.5
    assert abs(ooa - 1 / 3) < 4 * np.sqrt(2 / 9 / 6000) * 1.5


def test_invariant_to_rotation_and_scale() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 150)
    z = rng.normal(size=(150, 6)) + np.eye(6)[y] * 1.5
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = _scores(z, y, "grade_distance")
    b = _scores(4.0 * z @ q, y, "grade_distance")
    assert a == pytest.approx(b, abs=1e-12)
    assert 0.5 < a[0] < 1.0


def test_sampled_queries_have_clear_reference_decisions() -> None:
    y = np.random.default_rng(3).integers(0, 5, 80)
    for name in ("same_label", "grade_distance"):
        sref = reference_similarity(name, y)
        trip, dropped = triplet_queries(sref, len(y), 1000, 1e-9, np.random.default_rng(0))
        assert len(trip) == 1000 and dropped > 0
        assert np.all((trip[:, 0] != trip[:, 1]) & (trip[:, 0] != trip[:, 2]) & (trip[:, 1] != trip[:, 2]))
        assert np.all(np.abs(sref(trip[:, 0], trip[:, 1]) - sref(trip[:, 0], trip[:, 2])) > 0)
        ooo, odd, _ = odd_one_out_queries(sref, len(y), 500, 1e-9, np.random.default_rng(0))
        # pair similarity with item o left out, for o = 0, 1, 2: the odd item's pair is the unique best
        s = np.stack([sref(ooo[:, 1], ooo[:, 2]), sref(ooo[:, 0], ooo[:, 2]), sref(ooo[:, 0], ooo[:, 1])], 1)
        best = s[np.arange(500), odd]
        assert np.all((s < best[:, None]) | (np.arange(3)[None, :] == odd[:, None]))
    # same sampling seed -> same queries (paired comparisons between encoders)
    sref = reference_similarity("same_label", y)
    t1, _ = triplet_queries(sref, len(y), 200, 1e-9, np.random.default_rng(5))
    t2, _ = triplet_queries(sref, len(y), 200, 1e-9, np.random.default_rng(5))
    assert np.array_equal(t1, t2)
    # a single-class split has no valid query
    one = reference_similarity("same_label", np.zeros(10, dtype=int))
    assert len(triplet_queries(one, 10, 50, 1e-9, np.random.default_rng(0))[0]) == 0


def test_bootstrap_ci() -> None:
    v = (np.random.default_rng(0).random(2000) < 0.7).astype(float)
    lo, hi = bootstrap_ci(v, 500, seed=0)
    assert lo < v.mean() < hi and hi - lo < 0.06
    assert (lo, hi) == bootstrap_ci(v, 500, seed=0)
    se = np.sqrt(0.7 * 0.3 / 2000)
    assert abs((hi - lo) - 2 * 1.96 * se) < 0.01


def test_unknown_similarity_is_a_user_error() -> None:
    from lvmbench.errors import UserError

    with pytest.raises(UserError):
        reference_similarity("jaccard", np.zeros(3, dtype=int))


@pytest.mark.parametrize("task", ["brain_tumor_linear", "fgadr_linear"])
def test_protocol_end_to_end(task: str, synth_root, tmp_path) -> None:
    from lvmbench.runner import EvalRequest, run

    req = EvalRequest(
        encoder="resnet18",
        suite="smoke",
        tasks=[task],
        protocols=["similarity_queries"],
        data_root=synth_root,
        results=tmp_path / "results",
        cache_dir=tmp_path / "cache",
        progress=False,
        options={"workers": 0},
    )
    summary = run(req, log=lambda s: None)
    assert summary.ok and len(summary.done) == 1
    rec = json.loads(next((tmp_path / "results").rglob("similarity_queries-s0.json")).read_text())
    m = rec["metrics"]
    assert rec["primary_metric"] == "triplet_agreement"
    assert m["triplets"] == rec["hyperparameters"]["triplets"] > 0
    assert m["triplet_agreement_ci_low"] <= m["triplet_agreement"] <= m["triplet_agreement_ci_high"]
    assert m["odd_one_out_ci_low"] <= m["odd_one_out"] <= m["odd_one_out_ci_high"]
    assert rec["hyperparameters"]["similarity"] == ("grade_distance" if task == "fgadr_linear" else "same_label")
    cases = rec["per_case"]
    assert cases and all(c["split"] == "test" for c in cases)
    assert sum(c["triplets"] for c in cases) == m["triplets"]
    weighted = sum(c["score"] * c["triplets"] for c in cases) / m["triplets"]
    assert abs(weighted - m["triplet_agreement"]) < 1e-9
    # synthetic classes look different: the random-init embedding is above chance
    assert m["triplet_agreement"] > 0.55 and m["odd_one_out"] > 0.4
