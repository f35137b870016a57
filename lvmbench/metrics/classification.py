"""Classification metrics from a confusion matrix (vectorised; bootstrap calls them many times).

Tested against scikit-learn; AUC uses sklearn's ``roc_auc_score`` and is tested against a
brute-force Mann-Whitney count.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(cm.sum(), 1))


def balanced_accuracy(cm: np.ndarray) -> float:
    support = cm.sum(axis=1)
    present = support > 0
    recall = np.diag(cm)[present] / support[present]
    return float(recall.mean()) if recall.size else 0.0


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    # sklearn averages over labels present in y_true or y_pred
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def quadratic_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights (ordinal grades, e.g. DR 0-4)."""
    k = cm.shape[0]
    n = cm.sum()
    if n == 0:
        return 0.0
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = (i - j) ** 2 / max((k - 1) ** 2, 1)
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    denom = (w * expected).sum()
    return float(1.0 - (w * cm).sum() / denom) if denom > 0 else 0.0


def auc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Binary: AUC of the positive-class probability; multi-class: macro one-vs-rest AUC over
    classes present in ``y_true``. NaN when it is undefined (one class only)."""
    y = np.asarray(y_true)
    present = np.unique(y)
    if present.size < 2:
        return float("nan")
    if prob.shape[1] == 2:
        return float(roc_auc_score(y, prob[:, 1]))
    scores = [roc_auc_score((y == c).astype(int), prob[:, c]) for c in present]
    return float(np.mean(scores))


def classification_metrics(y_true: np.ndarray, prob: np.ndarray, num_classes: int) -> dict[str, float]:
    y_pred = prob.argmax(axis=1)
    cm = confusion(y_true, y_pred, num_classes)
    return {
        "accuracy": accuracy(cm),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "qwk": quadratic_kappa(cm),
        "auc": auc(y_true, prob),
    }
