"""Pieces shared by the classification protocols: scoring and per-case records."""

from __future__ import annotations

from typing import Any

import numpy as np

from lvmbench.data.cases import Case
from lvmbench.metrics.classification import classification_metrics


def labels_of(cases: list[Case]) -> np.ndarray:
    return np.array([c.label for c in cases], dtype=np.int64)


def score(cases: list[Case], prob: np.ndarray, num_classes: int) -> dict[str, float]:
    return classification_metrics(labels_of(cases), prob, num_classes)


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
            "prob": [round(float(p), 6) for p in prob[i]],
        }
        for i, c in enumerate(cases)
    ]


def counts(splits: dict[str, list[Case]]) -> dict[str, int]:
    return {k: len(v) for k, v in splits.items()}
