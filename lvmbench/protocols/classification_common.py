"""Pieces shared by the classification protocols: scoring and per-case records."""

from __future__ import annotations

from typing import Any

import numpy as np

from lvmbench.data.cases import Case
from lvmbench.metrics import classification as cls_metrics
from lvmbench.metrics.classification import classification_metrics


def labels_of(cases: list[Case]) -> np.ndarray:
    return np.array([c.label for c in cases], dtype=np.int64)


def score(cases: list[Case], prob: np.ndarray, num_classes: int) -> dict[str, float]:
    return classification_metrics(labels_of(cases), prob, num_classes)


def score_one(cases: list[Case], prob: np.ndarray, num_classes: int, metric: str) -> float:
    """One metric of ``score`` (validation selection needs only the primary one): the confusion-
    matrix metrics skip the per-class ROC curves of the AUC, the costliest part of ``score``."""
    y = labels_of(cases)
    if metric == "auc":
        return cls_metrics.auc(y, prob)
    cm = cls_metrics.confusion(y, prob.argmax(axis=1), num_classes)
    fns = {"accuracy": cls_metrics.accuracy, "balanced_accuracy": cls_metrics.balanced_accuracy, "macro_f1": cls_metrics.macro_f1, "qwk": cls_metrics.quadratic_kappa}
    if metric not in fns:
        return score(cases, prob, num_classes)[metric]
    return fns[metric](cm)


def per_case_records(cases: list[Case], prob: np.ndarray, split: str = "test") -> list[dict[str, Any]]:
    pred = prob.argmax(axis=1)
    return [
        {
            "case": c.id,
            "group": c.group,
            "split": split,
            "score": float(pred[i] == c.label),
            "label": int(c.label),
            "pred": int(pred[i]),
            "prob": [float(p) for p in prob[i]],  # full precision: AUC recomputes exactly (rounding made ties)
        }
        for i, c in enumerate(cases)
    ]


def counts(splits: dict[str, list[Case]]) -> dict[str, int]:
    return {k: len(v) for k, v in splits.items()}


def prior_baseline(train: list[Case], test: list[Case], num_classes: int, metric: str) -> dict[str, Any]:
    """What a predictor that learned only the training class frequencies scores on the test split
    (accuracy: the majority class's share; AUC: 0.5), through the same metric code."""
    freq = np.bincount(labels_of(train), minlength=num_classes).astype(np.float64)
    prob = np.tile(freq / max(freq.sum(), 1.0), (len(test), 1))
    return {"metric": metric, "value": float(score(test, prob, num_classes)[metric]), "predictor": "training class prior (majority class)"}
