"""Result records for the leaderboard tests (no tests here): three encoders at known levels."""

from __future__ import annotations

import numpy as np
from builders import cls_records, make_record

from lvmbench.tasks import tasks_in_suite

N = 40
SEG2D = sorted(t.id for t in tasks_in_suite("smoke") if t.family == "segmentation" and t.dims == "2d" and not t.ood)


def seg_cases(level: float, rng: np.random.Generator) -> list[dict]:
    return [{"case": f"c{i:03d}", "group": f"p{i // 2}", "split": "test", "score": float(np.clip(level + 0.05 * rng.standard_normal(), 0, 1))} for i in range(N)]


def cls_cases(acc: float, rng: np.random.Generator) -> list[dict]:
    labels = rng.integers(0, 4, N)
    right = rng.random(N) < acc
    pred = np.where(right, labels, (labels + 1) % 4)
    prob = np.full((N, 4), 0.1)
    prob[np.arange(N), pred] = 0.7
    return cls_records(labels, prob, [f"p{i // 2}" for i in range(N)])


# encoder -> level; "zeta" is best, so sorting by value reverses the alphabetical order
LEVELS = {("alpha", "a" * 64): 0.55, ("mid", "b" * 64): 0.7, ("zeta", "c" * 64): 0.85}


def records(suite: str = "smoke", partial: str = "alpha") -> list:
    """Every 2D-seg task for each encoder except ``partial`` (one task only), and brain_tumor_linear
    (linear + knn) for all."""
    rng = np.random.default_rng(0)
    out = []
    for (enc, sha), lvl in LEVELS.items():
        for seed in (0, 1):
            for t in SEG2D if enc != partial else SEG2D[:1]:
                out.append(make_record(seg_cases(lvl, rng), "dice", encoder=enc, sha=sha, task=t, protocol="seg2d", seed=seed, suite=suite, family="segmentation"))
            for proto in ("linear", "knn"):
                out.append(make_record(cls_cases(lvl, rng), "accuracy", encoder=enc, sha=sha, task="brain_tumor_linear", protocol=proto, seed=seed, suite=suite))
    return out
