"""SIRL-style similarity queries on the frozen embedding (reference §3.2).

Triplets are sampled inside the test split only (no leakage across splits) from the task's
labels, with a reference similarity ``s*`` chosen by ``similarity``:

- ``same_label`` (default): ``s*(a, b) = 1[y_a = y_b]``;
- ``grade_distance``: ``s*(a, b) = −|y_a − y_b|`` on the class index, for ordinal grades (DR).

Two scores of the embedding's cosine similarity ``s``:

- **triplet agreement** (primary, chance 0.5): anchor ``a`` and two others ``i, j`` with a clear
  reference decision ``|s*(a,i) − s*(a,j)| ≥ delta`` (ties dropped and counted); agreement when
  ``sign(s(a,i) − s(a,j)) = sign(s*(a,i) − s*(a,j))``; an exact tie of ``s`` scores 0.5;
- **odd-one-out accuracy** (chance 1/3, SIRL's anchor-free query "which two are most similar"):
  the odd item is the one outside the most similar pair; kept when the reference's best pair beats
  its second by ``delta``.

Both with percentile-bootstrap 95% CIs over triplets. Sampling and bootstrap use fixed seeds
(``triplet_seed``), so every encoder is scored on the same queries (paired comparisons). With
single labels the agreement is a monotone function of the neighbourhood structure and overlaps
Recall@K (§3.3); it adds information for ordinal or multi-label references.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from lvmbench.errors import UserError
from lvmbench.protocols.base import PROTOCOLS, Protocol, ProtocolOutput, RunContext
from lvmbench.protocols.classification_common import counts, labels_of
from lvmbench.protocols.features import split_features

SIMILARITIES = ("same_label", "grade_distance")
# the three pairs of a triple (x0, x1, x2) and the odd item each leaves out
PAIRS = ((0, 1), (0, 2), (1, 2))
ODD = np.array([2, 1, 0])


def reference_similarity(name: str, labels: np.ndarray):
    """``s*(idx_a, idx_b)`` vectorised over index arrays."""
    y = np.asarray(labels)
    if name == "same_label":
        return lambda a, b: (y[a] == y[b]).astype(np.float64)
    if name == "grade_distance":
        return lambda a, b: -np.abs(y[a].astype(np.float64) - y[b].astype(np.float64))
    raise UserError(f"unknown reference similarity '{name}'", fix=f"set similarity to one of {', '.join(SIMILARITIES)} in the task's similarity_queries hyperparameters")


def sample_triples(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` triples of three distinct indices in [0, n), uniformly (with replacement)."""
    if n < 3:
        return np.zeros((0, 3), dtype=np.int64)
    out = []
    have = 0
    while have < count:
        t = rng.integers(0, n, size=(2 * (count - have) + 16, 3))
        t = t[(t[:, 0] != t[:, 1]) & (t[:, 0] != t[:, 2]) & (t[:, 1] != t[:, 2])]
        out.append(t)
        have += len(t)
    return np.concatenate(out)[:count]


def triplet_queries(sref, n: int, count: int, delta: float, rng: np.random.Generator, max_rounds: int = 20) -> tuple[np.ndarray, int]:
    """Up to ``count`` anchored triplets (a, i, j) with a clear reference decision; + dropped ties."""
    kept, dropped = [], 0
    have = 0
    for _ in range(max_rounds):
        t = sample_triples(n, 2 * (count - have) + 16, rng)
        if not len(t):
            break
        ok = np.abs(sref(t[:, 0], t[:, 1]) - sref(t[:, 0], t[:, 2])) >= delta
        dropped += int((~ok).sum())
        kept.append(t[ok])
        have += int(ok.sum())
        if have >= count:
            break
    trip = np.concatenate(kept)[:count] if kept else np.zeros((0, 3), dtype=np.int64)
    return trip, dropped


def odd_one_out_queries(sref, n: int, count: int, delta: float, rng: np.random.Generator, max_rounds: int = 20) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to ``count`` triples with a unique reference odd one out: (triples, odd position, dropped)."""
    kept, odd, dropped, have = [], [], 0, 0
    for _ in range(max_rounds):
        t = sample_triples(n, 2 * (count - have) + 16, rng)
        if not len(t):
            break
        s = np.stack([sref(t[:, p], t[:, q]) for p, q in PAIRS], axis=1)
        srt = np.sort(s, axis=1)
        ok = srt[:, -1] - srt[:, -2] >= delta
        dropped += int((~ok).sum())
        kept.append(t[ok])
        odd.append(ODD[s[ok].argmax(axis=1)])
        have += int(ok.sum())
        if have >= count:
            break
    if not kept:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64), dropped
    return np.concatenate(kept)[:count], np.concatenate(odd)[:count], dropped


def cosine_pairs(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", z[a], z[b])


def triplet_agreement(z: np.ndarray, trip: np.ndarray, sref) -> np.ndarray:
    """Per-triplet agreement in {0, 0.5, 1} of the unit-norm embedding ``z`` with the reference."""
    ds = np.sign(cosine_pairs(z, trip[:, 0], trip[:, 1]) - cosine_pairs(z, trip[:, 0], trip[:, 2]))
    dr = np.sign(sref(trip[:, 0], trip[:, 1]) - sref(trip[:, 0], trip[:, 2]))
    return np.where(ds == 0, 0.5, (ds == dr).astype(np.float64))


def odd_one_out_scores(z: np.ndarray, triples: np.ndarray, odd: np.ndarray) -> np.ndarray:
    """Per-triple credit: 1 when the embedding's most similar pair leaves out the reference's odd
    item, split evenly when several pairs tie for most similar."""
    s = np.stack([cosine_pairs(z, triples[:, p], triples[:, q]) for p, q in PAIRS], axis=1)
    top = s == s.max(axis=1, keepdims=True)
    hit = top[np.arange(len(triples)), 2 - odd]  # ODD is its own inverse: pair index = 2 - odd
    return hit / top.sum(axis=1)


def bootstrap_ci(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95, chunk: int = 200) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = []
    for s in range(0, n_boot, chunk):
        idx = rng.integers(0, len(values), size=(min(chunk, n_boot - s), len(values)))
        means.append(values[idx].mean(axis=1))
    m = np.concatenate(means)
    lo, hi = np.quantile(m, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@PROTOCOLS.register("similarity_queries")
class SimilarityQueries(Protocol):
    name = "similarity_queries"
    families = ("classification",)

    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp = dict(ctx.hparams)
        sim_name = hp.get("similarity", "same_label")
        count = int(hp.get("triplets", 20000))
        delta = float(hp.get("delta", 1e-9))
        n_boot = int(hp.get("bootstrap", 1000))
        tseed = int(hp.get("triplet_seed", 0))
        t0 = time.perf_counter()
        feats, splits, timings = split_features(ctx, bn_mode=hp.get("bn_mode", "eval"), batch_size=int(hp.get("feature_batch_size", 64)))
        test = splits["test"]
        y = labels_of(test)
        z = feats["test"].astype(np.float64)
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        sref = reference_similarity(sim_name, y)
        rng = np.random.default_rng([tseed, 0])
        trip, tas_dropped = triplet_queries(sref, len(test), count, delta, rng)
        ooo, odd, ooo_dropped = odd_one_out_queries(sref, len(test), count, delta, np.random.default_rng([tseed, 1]))
        tas = triplet_agreement(z, trip, sref) if len(trip) else np.zeros(0)
        ooa = odd_one_out_scores(z, ooo, odd) if len(ooo) else np.zeros(0)
        nan = float("nan")
        metrics = {"triplet_agreement": float(tas.mean()) if len(tas) else nan, "odd_one_out": float(ooa.mean()) if len(ooa) else nan}
        lo, hi = bootstrap_ci(tas, n_boot, seed=tseed + 1)
        metrics.update({"triplet_agreement_ci_low": lo, "triplet_agreement_ci_high": hi})
        lo, hi = bootstrap_ci(ooa, n_boot, seed=tseed + 2)
        metrics.update({"odd_one_out_ci_low": lo, "odd_one_out_ci_high": hi})
        metrics.update({"triplets": float(len(tas)), "triplets_dropped_ties": float(tas_dropped), "odd_one_out_triples": float(len(ooa)), "odd_one_out_dropped_ties": float(ooo_dropped)})
        by_anchor: dict[int, list[float]] = defaultdict(list)
        for (a, _, _), v in zip(trip, tas):
            by_anchor[int(a)].append(float(v))
        per_case = [
            {"case": test[a].id, "group": test[a].group, "split": "test", "score": float(np.mean(v)), "label": int(y[a]), "triplets": len(v)}
            for a, v in sorted(by_anchor.items())
        ]
        by_label = {str(c): float(tas[y[trip[:, 0]] == c].mean()) for c in np.unique(y[trip[:, 0]])} if len(trip) else {}
        timings["total_s"] = time.perf_counter() - t0
        used: dict[str, Any] = {**hp, "similarity": sim_name, "triplets": count, "delta": delta, "bootstrap": n_boot, "triplet_seed": tseed, "scorer": "cosine"}
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts=counts(splits),
            extra={"triplet_agreement_by_anchor_label": by_label, "chance": {"triplet_agreement": 0.5, "odd_one_out": 1 / 3}},
            flags=[] if len(tas) else ["no-valid-triplets"],
            timings=timings,
            primary_metric="triplet_agreement",
        )
