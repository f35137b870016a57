"""SIRL-style similarity queries: triplet agreement and odd-one-out accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvmbench.metrics.bootstrap import percentile_ci, resample_weights
from lvmbench.protocols.similarity_queries import (
    bootstrap_ci,
    cluster_bootstrap_ci,
    odd_one_out_queries,
    odd_one_out_scores,
    reference_similarity,
    triplet_agreement,
    triplet_queries,
    tuple_bootstrap_stats,
)
from lvmbench.spec import RunOptions


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


def brute_resampled_mean(values: np.ndarray, trip: np.ndarray, groups: np.ndarray, counts: dict[str, int]) -> float:
    """The statistic on a materialised resample: group g copied counts[g] times, every copy of an
    image a distinct item; a design triplet (a, i, j) then stands for every triplet of copies."""
    copies: dict[int, list[tuple[int, int]]] = {}
    for x, gx in enumerate(groups):
        copies[x] = [(x, c) for c in range(counts.get(gx, 0))]
    total, n = 0.0, 0
    for (a, i, j), v in zip(trip, values):
        for _ca in copies[a]:
            for _ci in copies[i]:
                for _cj in copies[j]:
                    total += v
                    n += 1
    return total / n if n else float("nan")


def _clustered(seed: int, n_pat: int = 40, per: int = 4, d: int = 8, classes: int = 4, centres=None):
    """Patients with a shared offset: images of one patient agree or disagree together."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(classes, d)) if centres is None else centres
    yp = rng.integers(0, classes, n_pat)
    x = np.repeat(c[yp] + 1.5 * rng.normal(size=(n_pat, d)), per, axis=0) + 0.5 * rng.normal(size=(n_pat * per, d))
    return _unit(x), np.repeat(yp, per), np.repeat([f"p{i:03d}" for i in range(n_pat)], per)


def test_cluster_bootstrap_equals_a_materialised_resample() -> None:
    z, y, g = _clustered(0, n_pat=8, per=3)
    sref = reference_similarity("same_label", y)
    trip, _ = triplet_queries(sref, len(y), 150, 1e-9, np.random.default_rng(0))
    v = triplet_agreement(z, trip, sref)
    rng = np.random.default_rng(1)
    uniq = sorted(set(g))
    draws = [dict(zip(uniq, rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq))))) for _ in range(25)]
    w = np.array([[d[gx] for gx in g] for d in draws], dtype=float)
    got = tuple_bootstrap_stats(v, trip, w)
    want = np.array([brute_resampled_mean(v, trip, g, d) for d in draws])
    assert np.allclose(got, want, atol=1e-12, equal_nan=True)
    # all-ones weights: the plain mean; odd-one-out triples go through the same weighting
    assert tuple_bootstrap_stats(v, trip, np.ones((1, len(y))))[0] == pytest.approx(v.mean(), abs=1e-12)
    # the interval is the percentile interval of those replicates under group draws
    lo, hi = cluster_bootstrap_ci(v, trip, g, 200, seed=3)
    assert (lo, hi) == pytest.approx(percentile_ci(tuple_bootstrap_stats(v, trip, resample_weights(list(g), 200, 3))), abs=1e-12)
    wr = resample_weights(list(g), 50, 3)
    assert all(len(set(wr[b, g == gx])) == 1 for b in range(50) for gx in uniq)  # whole groups drawn


def test_cluster_interval_is_wider_than_the_triplet_bootstrap_and_calibrated() -> None:
    """Across test sets drawn from one clustered population: the triplet bootstrap's SE is a
    fraction of the true SD of the agreement, the group bootstrap's is close to it."""
    centres = np.random.default_rng(99).normal(size=(4, 8))
    stats, se_trip, se_clu, widths = [], [], [], []
    for s in range(50):
        z, y, g = _clustered(100 + s, n_pat=40, per=3, centres=centres)
        sref = reference_similarity("same_label", y)
        trip, _ = triplet_queries(sref, len(y), 2000, 1e-9, np.random.default_rng([s, 1]))
        v = triplet_agreement(z, trip, sref)
        stats.append(v.mean())
        rng = np.random.default_rng(s)
        se_trip.append(v[rng.integers(0, len(v), size=(100, len(v)))].mean(axis=1).std())
        se_clu.append(np.nanstd(tuple_bootstrap_stats(v, trip, resample_weights(list(g), 100, s))))
        if s < 3:
            old, new = bootstrap_ci(v, 300, seed=0), cluster_bootstrap_ci(v, trip, g, 300, seed=0)
            widths.append((old[1] - old[0], new[1] - new[0]))
    sd = float(np.std(stats))
    assert np.mean(se_trip) < 0.4 * sd, (np.mean(se_trip), sd)
    assert 0.8 * sd < np.mean(se_clu) < 1.5 * sd, (np.mean(se_clu), sd)
    assert all(new > 2.5 * old for old, new in widths), widths


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
        run=RunOptions(progress=False, workers=0))
    summary = run(req, log=lambda s: None)
    assert summary.ok and len(summary.done) == 1
    rec = json.loads(next((tmp_path / "results").rglob("similarity_queries-s0.json")).read_text(encoding="utf-8"))
    m = rec["metrics"]
    assert rec["primary_metric"] == "triplet_agreement"
    assert m["triplets"] == rec["hyperparameters"]["triplets"] > 0
    assert m["triplet_agreement_ci_low"] <= m["triplet_agreement"] <= m["triplet_agreement_ci_high"]
    assert m["odd_one_out_ci_low"] <= m["odd_one_out"] <= m["odd_one_out_ci_high"]
    assert rec["extra"]["ci"]["resamples"] == "groups" and rec["extra"]["ci"]["groups"] > 1
    assert rec["hyperparameters"]["similarity"] == ("grade_distance" if task == "fgadr_linear" else "same_label")
    cases = rec["per_case"]
    assert cases and all(c["split"] == "test" for c in cases)
    assert sum(c["triplets"] for c in cases) == m["triplets"]
    weighted = sum(c["score"] * c["triplets"] for c in cases) / m["triplets"]
    assert abs(weighted - m["triplet_agreement"]) < 1e-9
    # synthetic classes look different: the random-init embedding is above chance
    assert m["triplet_agreement"] > 0.55 and m["odd_one_out"] > 0.4


def test_leaderboard_cell_uses_the_protocols_own_cluster_interval():
    """Per-anchor records cannot reproduce the group bootstrap of triplet statistics: the
    leaderboard shows the interval the protocol recorded (one seed exactly, several approximately)."""
    from builders import make_record

    from lvmbench.stats import cell_ci

    per_case = [{"case": f"c{i}", "group": f"p{i // 2}", "split": "test", "score": 0.5 + 0.01 * i} for i in range(10)]
    recs = []
    for seed, (lo, hi) in enumerate([(0.40, 0.70), (0.44, 0.74)]):
        r = make_record(per_case, "triplet_agreement", protocol="similarity_queries", seed=seed, primary=0.55)
        r.metrics.update({"triplet_agreement_ci_low": lo, "triplet_agreement_ci_high": hi})
        recs.append(r)
    one = cell_ci(recs[:1], n_boot=200)
    assert (one.lo, one.hi) == (0.40, 0.70) and not one.method.endswith("(approx.)")
    both = cell_ci(recs, n_boot=200)
    assert both.lo == pytest.approx(0.42) and both.hi == pytest.approx(0.72) and both.method.endswith("(approx.)")
