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

Both with percentile-bootstrap 95% CIs that resample the test split's groups (patients,
volumes; see ``cluster_bootstrap_ci``), not triplets. Sampling and bootstrap use fixed seeds
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
from lvmbench.metrics.bootstrap import percentile_ci, resample_weights
from lvmbench.protocols import declared
from lvmbench.protocols.base import PROTOCOLS, Protocol, ProtocolOutput, RunContext
from lvmbench.protocols.classification_common import counts, labels_of
from lvmbench.protocols.features import split_features
from lvmbench.protocols.settings import SimilarityQuerySettings

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
    """Percentile bootstrap CI of the mean of independent values. Not for triplet scores: they
    share images, see ``cluster_bootstrap_ci``."""
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


def tuple_bootstrap_stats(values: np.ndarray, members: np.ndarray, weights: np.ndarray, max_elems: int = 1 << 22) -> np.ndarray:
    """Replicates of the mean of per-tuple ``values`` (T,) over tuples of images ``members``
    (T, k) when image x is drawn ``weights[b, x]`` times: tuple t counts the product of its
    members' multiplicities. (B,) values, NaN where no tuple survives a resample."""
    values = np.asarray(values, dtype=np.float64)
    members = np.asarray(members, dtype=np.int64)
    out = np.full(len(weights), np.nan)
    if len(values) == 0:
        return out
    step = max(1, max_elems // len(values))
    for s in range(0, len(weights), step):
        w = weights[s : s + step]
        tw = w[:, members[:, 0]].copy()  # (b, T): multiplicity of each tuple in the resample
        for c in range(1, members.shape[1]):
            tw *= w[:, members[:, c]]
        tot = tw.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + step] = np.where(tot > 0, (tw @ values) / tot, np.nan)
    return out


def cluster_bootstrap_ci(values: np.ndarray, members: np.ndarray, groups, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of a mean over image tuples (triplets) that resamples groups of images.

    Triplet agreement and odd-one-out accuracy are incomplete U-statistics of order 3 over the
    test images: each image sits in many triplets, as anchor and as compared item, and images of
    one patient are alike. Resampling triplets treats 20 000 overlapping triplets as independent
    and gives an interval several times too narrow. The sampling unit is the image, or the
    patient/volume when the split groups images (``Case.group``).

    A replicate is the statistic recomputed on a resampled test set (the plug-in principle):
    groups are drawn with replacement (``metrics.bootstrap.resample_weights``, each image
    inheriting its group's count m), and a triplet (a, i, j) of the fixed query design occurs
    m_a·m_i·m_j times among the copies, so it is weighted by that product. This is the standard
    bootstrap of U-statistics (Bickel & Freedman 1981, Ann. Statist. 9:1196; Arcones & Giné 1992,
    Ann. Statist. 20:655) applied to clusters (Field & Welsh 2007, JRSS-B 69:369; Davison &
    Hinkley 1997 §3.8), and the rule the AUC (a Mann–Whitney pair statistic) bootstrap in
    ``metrics.bootstrap`` follows. Weighting by the anchor's count alone was rejected: it holds
    the compared images fixed, dropping their share of the variance (of the three Hoeffding
    projection terms of an order-3 kernel it keeps one), and its interval is too narrow too.

    Simulated check (60 patients × 4 images, 4 classes, patient effect, 20 000 triplets, 120 test
    sets): the true SD of the agreement was 0.033; the mean bootstrap SE was 0.003 resampling
    triplets (0.10×), 0.021 weighting by the anchor (0.62×) and 0.038 with product weights
    (1.13×). Product weights err on the wide side: 1.2–1.45× on 400–1000 single-image patients
    with a weak embedding, 2.2× for a random embedding (agreement then is mostly per-triplet
    noise, which reweighting a fixed design inflates by E[(m_a·m_i·m_j)²] − 1 = 7 instead of 1).
    Redrawing the triplets inside each resample would remove that excess, at B·T extra triplet
    evaluations. Not included: the Monte-Carlo error of the design itself, shared by every encoder
    scored on the same ``triplet_seed`` (paired comparisons).
    """
    if len(values) == 0:
        return float("nan"), float("nan")
    w = resample_weights([str(g) for g in groups], n_boot, seed)
    return percentile_ci(tuple_bootstrap_stats(values, members, w), alpha=1 - level)


@PROTOCOLS.register("similarity_queries")
class SimilarityQueries(declared.SimilarityQueries, Protocol):
    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp: SimilarityQuerySettings = ctx.settings  # type: ignore[assignment]
        sim_name, count, delta, n_boot, tseed = hp.similarity, hp.triplets, hp.delta, hp.bootstrap, hp.triplet_seed
        t0 = time.perf_counter()
        feats, splits, timings = split_features(ctx, bn_mode=hp.bn_mode, batch_size=hp.feature_batch_size)
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
        # intervals resample the test split's groups (patients/volumes), not triplets
        groups = [c.group for c in test]
        lo, hi = cluster_bootstrap_ci(tas, trip, groups, n_boot, seed=tseed + 1)
        metrics.update({"triplet_agreement_ci_low": lo, "triplet_agreement_ci_high": hi})
        lo, hi = cluster_bootstrap_ci(ooa, ooo, groups, n_boot, seed=tseed + 2)
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
        used: dict[str, Any] = {"scorer": "cosine"}
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts=counts(splits),
            extra={"triplet_agreement_by_anchor_label": by_label, "chance": {"triplet_agreement": 0.5, "odd_one_out": 1 / 3},
                   "baseline": {"metric": "triplet_agreement", "value": 0.5, "predictor": "chance (a random similarity)"},
                   "ci": {"resamples": "groups", "groups": len(set(groups)), "tuple_weight": "product of member multiplicities"}},
            flags=[] if len(tas) else ["no-valid-triplets"],
            timings=timings,
            primary_metric="triplet_agreement",
        )
