"""Classification metrics against scikit-learn (and AUC against a brute-force pair count)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lvmbench.metrics.classification import (
    accuracy,
    auc,
    balanced_accuracy,
    classification_metrics,
    confusion,
    macro_f1,
    quadratic_kappa,
)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 4, 5])
def test_against_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    y = rng.integers(0, k, n)
    # correlated predictions, sometimes with a class never predicted
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    if seed % 2:
        pred[pred == k - 1] = 0
    cm = confusion(y, pred, k)
    assert np.array_equal(cm, skm.confusion_matrix(y, pred, labels=range(k)))
    assert accuracy(cm) == pytest.approx(skm.accuracy_score(y, pred))
    assert balanced_accuracy(cm) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert macro_f1(cm) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert quadratic_kappa(cm) == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))


def brute_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_auc_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, k = 60, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + np.eye(k)[y] * rng.uniform(0, 2)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prob = np.round(prob, 2)  # create ties
    want = np.mean([brute_auc(prob[y == c, c], prob[y != c, c]) for c in range(k)])
    assert auc(y, prob) == pytest.approx(want)
    y2 = (y > 0).astype(int)
    p2 = np.stack([1 - prob[:, 0], prob[:, 0]], 1)
    assert auc(y2, p2) == pytest.approx(brute_auc(p2[y2 == 1, 1], p2[y2 == 0, 1]))


def test_auc_undefined_with_one_class():
    assert np.isnan(auc(np.zeros(5, int), np.full((5, 2), 0.5)))


def test_bundle_uses_argmax():
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(np.array([0, 1, 1]), prob, 2)
    assert m["accuracy"] == pytest.approx(2 / 3)
