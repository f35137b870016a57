"""Bootstrap machinery against independent references: sklearn, the plain metrics on repeated
cases, pycocotools-checked AP, a textbook Holm example, and coverage on simulated clustered data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import cls_records, make_record
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from lvmbench.metrics import bootstrap as bs
from lvmbench.metrics.classification import classification_metrics
from lvmbench.metrics.detection import ap_from_records
from lvmbench.stats import aulc, cell_ci, holm, normalised, paired_test


def _cls(rng, n, k, round_to=None):
    labels = rng.integers(0, k, n)
    prob = rng.dirichlet(np.ones(k), n)
    if round_to is not None:
        prob = np.round(prob, round_to)  # creates score ties, which AUC must count as 1/2
    return labels, prob


@pytest.mark.parametrize("k", [2, 3, 5])
def test_weighted_classification_metrics_match_sklearn_on_repeated_cases(k):
    rng = np.random.default_rng(k)
    labels, prob = _cls(rng, 80, k, round_to=2)
    recs = cls_records(labels, prob, groups=[str(i // 4) for i in range(80)])
    w = bs.resample_weights([r["group"] for r in recs], 25, seed=3)
    for b in range(25):
        idx = np.repeat(np.arange(80), w[b].astype(int))
        y, p = labels[idx], prob[idx]
        pred = p.argmax(1)
        ref = {
            "accuracy": accuracy_score(y, pred),
            "balanced_accuracy": balanced_accuracy_score(y, pred),
            "macro_f1": f1_score(y, pred, average="macro"),
            "qwk": cohen_kappa_score(y, pred, weights="quadratic"),
            "auc": classification_metrics(y, p, k)["auc"],
        }
        for name, want in ref.items():
            got, method = bs.weighted_metric(name, recs, w[b : b + 1])
            assert method == bs.METHOD_RECOMPUTED
            assert got[0] == pytest.approx(want, abs=1e-9, nan_ok=True), (name, b)
        # the AUC statistic itself against sklearn's weighted ROC area
        pos = labels == (1 if k == 2 else 0)
        score = prob[:, 1 if k == 2 else 0]
        assert bs.weighted_binary_auc(score, pos, w[b : b + 1])[0] == pytest.approx(roc_auc_score(pos, score, sample_weight=w[b]), abs=1e-12)


def test_weighted_ap_matches_records_repeated():
    rng = np.random.default_rng(7)
    recs = []
    for i in range(40):
        n_gt = {str(c): int(v) for c in range(3) if (v := rng.integers(0, 3))}
        dets = [[int(rng.integers(0, 3)), float(rng.random()), bool(rng.random() < 0.6)] for _ in range(rng.integers(0, 6))]
        recs.append({"case": str(i), "group": str(i // 2), "n_gt": n_gt, "dets": dets, "score": 0.0})
    w = bs.resample_weights([r["group"] for r in recs], 30, seed=1)
    for b in range(30):
        repeated = [recs[i] for i in range(40) for _ in range(int(w[b, i]))]
        got, method = bs.weighted_metric("ap50", recs, w[b : b + 1])
        assert method == bs.METHOD_RECOMPUTED
        assert got[0] == pytest.approx(ap_from_records(repeated)[0], abs=1e-12)


@pytest.mark.parametrize("block", [7, bs.AP_BLOCK], ids=["blocks-of-rows", "one-block"])
def test_weighted_ap_is_vectorised_over_resamples_exactly(monkeypatch, block):
    """All resamples in one pass (in blocks of rows when memory asks): each row the AP of the records
    repeated by its weights, images drawn 0 times included."""
    monkeypatch.setattr(bs, "AP_BLOCK", block)
    rng = np.random.default_rng(11)
    recs = []
    for i in range(30):
        n_gt = {str(c): int(v) for c in range(3) if (v := rng.integers(0, 3))}
        dets = [[int(rng.integers(0, 3)), float(rng.random()), bool(rng.random() < 0.5)] for _ in range(rng.integers(0, 7))]
        recs.append({"case": str(i), "group": str(i // 3), "n_gt": n_gt, "dets": dets, "score": 0.0})
    w = np.vstack([np.ones(30), np.zeros(30), bs.resample_weights([r["group"] for r in recs], 40, seed=2)])
    got = bs.weighted_ap(recs, w)
    assert np.isnan(got[1]), "nothing drawn: undefined"
    for b in range(len(w)):
        if b != 1:
            repeated = [recs[i] for i in range(30) for _ in range(int(w[b, i]))]
            assert got[b] == pytest.approx(ap_from_records(repeated)[0], abs=1e-12)


def test_average_ranks_match_scipy():
    from scipy.stats import rankdata

    from lvmbench.stats import average_ranks

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 40):
        v = np.round(rng.random(n), 1)  # ties
        assert average_ranks(v) == rankdata(v, method="average").tolist()


def test_resampling_keeps_groups_whole_and_ignores_case_order():
    rng = np.random.default_rng(0)
    groups = [f"p{g}" for g in rng.integers(0, 15, 60)]
    w = bs.resample_weights(groups, 200, seed=5)
    for g in set(groups):
        cols = w[:, [i for i, x in enumerate(groups) if x == g]]
        assert (cols == cols[:, :1]).all(), "cases of one patient are drawn together"
    n_groups = len(set(groups))
    first = {g: i for i, g in reversed(list(enumerate(groups)))}
    assert (w[:, list(first.values())].sum(axis=1) == n_groups).all(), "each resample draws as many patients as there are"
    perm = rng.permutation(60)
    w2 = bs.resample_weights([groups[i] for i in perm], 200, seed=5)
    assert np.array_equal(w2, w[:, perm])


def _coverage(group_size: int, resample_groups: bool, reps: int = 150) -> float:
    """Share of 95% CIs that contain the true mean, for scores with a strong per-patient effect."""
    rng = np.random.default_rng(123)
    hit = 0
    for r in range(reps):
        n_groups = 30
        effect = rng.normal(0, 1, n_groups)
        groups = np.repeat(np.arange(n_groups), group_size)
        scores = effect[groups] + rng.normal(0, 0.3, len(groups))
        recs = [{"score": float(s)} for s in scores]
        keys = [str(g) for g in groups] if resample_groups else [str(i) for i in range(len(groups))]
        w = bs.resample_weights(keys, 400, seed=r)
        lo, hi = bs.percentile_ci(bs.weighted_mean_score(recs, w))
        hit += lo <= 0.0 <= hi
    return hit / reps


def test_patient_bootstrap_covers_and_case_bootstrap_does_not():
    assert 0.87 <= _coverage(6, resample_groups=True) <= 0.99
    assert _coverage(6, resample_groups=False) < 0.80, "ignoring patients gives far too narrow intervals"


def test_paired_test_is_consistent_with_its_interval():
    rng = np.random.default_rng(11)
    labels, prob = _cls(rng, 120, 3)
    groups = [str(i // 3) for i in range(120)]
    a = make_record(cls_records(labels, prob, groups), "accuracy", encoder="a")
    same = paired_test([a], [a], n_boot=500, seed=1)
    assert same is not None and same.diff == 0 and same.p == 1.0
    # B predicts the truth on every case: clearly better than A's random guesses
    perfect = np.eye(3)[labels] * 0.9 + 0.05
    b = make_record(cls_records(labels, perfect, groups), "accuracy", encoder="b")
    t = paired_test([a], [b], n_boot=1000, seed=2)
    assert t is not None and t.diff < 0 and t.p < 0.01 and t.hi < 0
    for seed in range(5):
        noisy = make_record(cls_records(labels, _cls(np.random.default_rng(seed), 120, 3)[1], groups), "accuracy", encoder="c")
        t = paired_test([a], [noisy], n_boot=400, seed=seed)
        assert (t.p < 0.05) == (t.lo > 0 or t.hi < 0) or min(abs(t.lo), abs(t.hi)) < 1e-12


def test_cell_ci_recomputes_and_flags_stand_ins():
    rng = np.random.default_rng(2)
    labels, prob = _cls(rng, 90, 4)
    recs = cls_records(labels, prob, [str(i // 3) for i in range(90)])
    r0 = make_record(recs, "auc", encoder="x", seed=0)
    ci = cell_ci([r0], n_boot=500, seed=4)
    assert ci is not None and ci.method == "recomputed" and ci.lo <= r0.primary <= ci.hi
    assert ci.n_cases == 90 and ci.n_groups == 30
    assert cell_ci([r0], n_boot=500, seed=4) == ci, "same seed, same interval"
    # a metric the records cannot recompute and that is not the mean per-case score
    odd = make_record(recs, "dice_global", encoder="x", primary=0.123)
    assert cell_ci([odd], n_boot=200, seed=0).method == "per-case mean (approx.)"
    mean_score = make_record(recs, "dice", encoder="x", primary=float(np.mean([r["score"] for r in recs])))
    assert cell_ci([mean_score], n_boot=200, seed=0).method == "per-case mean"
    assert cell_ci([make_record([], "dice", encoder="x")]) is None


def test_holm_textbook_example_and_nan():
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    got = holm([0.5, float("nan"), 0.01])
    assert math.isnan(got[1]) and got[0] == pytest.approx(0.5) and got[2] == pytest.approx(0.02)


def test_aulc_formula():
    assert aulc([0.01, 0.1, 1.0], [0.7, 0.7, 0.7]) == pytest.approx(0.7)
    # linear in log10(fraction): the average is the value at the middle
    assert aulc([1.0, 0.01, 0.1], [0.9, 0.5, 0.7]) == pytest.approx(0.7)
    x, y = np.log10([0.01, 0.05, 1.0]), np.array([0.2, 0.6, 0.8])
    assert aulc([0.01, 0.05, 1.0], y) == pytest.approx(np.trapezoid(y, x) / (x[-1] - x[0]))
    assert math.isnan(aulc([1.0], [0.5]))


def test_normalised_score_anchors():
    assert normalised(0.5, 0.5, 0.9) == 0.0 and normalised(0.9, 0.5, 0.9) == 1.0
    assert normalised(0.7, 0.5, 0.9) == pytest.approx(0.5)
    assert normalised(10.0, 20.0, 12.0) == pytest.approx(1.25), "lower-is-better metrics work unchanged"
    assert math.isnan(normalised(0.6, 0.5, 0.5))


def test_ood_average_resamples_within_each_set():
    rng = np.random.default_rng(4)
    recs = [{"case": f"t{i}", "group": f"p{i // 2}", "split": "test", "score": float(rng.random())} for i in range(20)]
    recs += [{"case": f"o{i}", "group": f"p{i}", "split": "ood:chase", "score": float(rng.random() / 2)} for i in range(8)]
    w = bs.resample_weights([r["group"] for r in recs], 200, 0, strata=[r["split"] for r in recs])
    assert (w[:, :20].sum(axis=1) == 20).all() and (w[:, 20:].sum(axis=1) == 8).all(), "each set keeps its size"
    assert not np.array_equal(w[:, 0], w[:, 20]), "'p0' of the test set and of the OOD set are different patients"
    full = np.mean([np.mean([r["score"] for r in recs[:20]]), np.mean([r["score"] for r in recs[20:]])])
    got, method = bs.weighted_metric("dice_avg", recs, np.ones((1, 28)))
    assert method == bs.METHOD_RECOMPUTED and got[0] == pytest.approx(full)
    b = w[7]
    manual = np.mean([np.average([r["score"] for r in recs[:20]], weights=b[:20]), np.average([r["score"] for r in recs[20:]], weights=b[20:])])
    assert bs.weighted_metric("dice_avg", recs, w[7:8])[0][0] == pytest.approx(manual)
    ci = cell_ci([make_record(recs, "dice_avg", family="segmentation")], n_boot=300, seed=1)
    assert ci.method == "recomputed" and ci.n_cases == 28 and ci.lo <= full <= ci.hi


def test_ood_average_uses_the_averaged_metric_not_the_primary_score():
    """prostate_ood: per-case ``score`` is the volumetric IoU, ``dice_avg`` averages per-case ``dice``."""
    rng = np.random.default_rng(5)
    recs = [{"case": f"t{i}", "group": f"t{i}", "split": "test", "score": 0.1, "dice": float(0.8 + rng.random() / 10)} for i in range(6)]
    recs += [{"case": f"o{i}", "group": f"o{i}", "split": "ood:bidmc", "score": 0.0, "dice": float(0.5 + rng.random() / 10)} for i in range(6)]
    full = np.mean([np.mean([r["dice"] for r in recs[:6]]), np.mean([r["dice"] for r in recs[6:]])])
    got, method = bs.weighted_metric("dice_avg", recs, np.ones((1, 12)))
    assert method == bs.METHOD_RECOMPUTED and got[0] == pytest.approx(full)
    ci = cell_ci([make_record(recs, "dice_avg", family="segmentation", primary=float(full))], n_boot=300, seed=1)
    assert ci.method == "recomputed" and ci.lo <= full <= ci.hi
    # a shown value the records cannot reproduce (slice-pooled vs per-volume) marks the CI a stand-in
    ci = cell_ci([make_record(recs, "dice_avg", family="segmentation", primary=float(full) + 0.05)], n_boot=300, seed=1)
    assert ci.method.endswith("(approx.)")


def test_stored_probabilities_recompute_auc_exactly():
    """Probabilities are stored at full precision, so the AUC recomputed from the per-case records
    is the AUC the protocol reported: no stand-in interval (‡). Rounded to 6 decimals, scores less
    than 1e-6 apart tied and moved the AUC."""
    from types import SimpleNamespace

    from lvmbench.metrics.classification import auc
    from lvmbench.protocols.classification_common import per_case_records

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 80)
    p1 = (0.5 + 1e-8 * rng.permutation(80)).astype(np.float32).astype(np.float64)  # distinct, all within 1e-6
    prob = np.stack([1 - p1, p1], axis=1)
    cases = [SimpleNamespace(id=f"c{i}", group=f"p{i}", label=int(labels[i])) for i in range(80)]
    recs = per_case_records(cases, prob)
    assert [r["prob"][1] for r in recs] == p1.tolist(), "stored exactly"
    rec = make_record(recs, "accuracy")
    rec.metrics["auc"] = auc(labels, prob)
    ci = cell_ci([rec], n_boot=200, seed=0, metric="auc")
    assert ci is not None and ci.method == "recomputed", ci

