"""Statistics over result records: bootstrap CIs, paired tests, Holm correction, summary scores.

Every function here takes the result records of one cell (one encoder on one task/protocol at one
label fraction, one record per seed) and works on the test split's per-case records.

- **CI of a cell**: a cluster bootstrap over the test set's patients/volumes (``group``); in each
  resample the metric is recomputed for every seed and the seeds are averaged, so the interval is
  the test-sampling uncertainty of the number the leaderboard shows (the seed-mean). Percentile
  interval, ``n_boot`` resamples, seed derived from the cell's key: the same inputs always give the
  same interval.
- **Paired test of A vs B**: the same resamples of the cases both encoders scored, the difference
  of the seed-means in each; two-sided bootstrap p-value ``p = min(1, 2 min(P*(d <= 0), P*(d >= 0)))``
  (with the +1 correction), so ``p < alpha`` exactly when the (1 - alpha) percentile interval of the
  difference excludes 0.
- **Holm** step-down adjustment over the tasks of one comparison.
- **AULC** (label efficiency) and the **normalised score** (see their docstrings for the formulas).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lvmbench.metrics.bootstrap import METHOD_MEAN, RECOMPUTED, percentile_ci, resample_weights, weighted_metric
from lvmbench.spec import ResultRecord

DEFAULT_BOOT = 2000
# Metrics where smaller is better; every other primary metric (accuracy, Dice, AP, recall) is
# higher-is-better.
LOWER_IS_BETTER = frozenset({"hd95", "hd", "asd", "assd", "loss", "error", "mae", "rmse"})


def higher_is_better(metric: str) -> bool:
    return metric.split("/")[0] not in LOWER_IS_BETTER


def stable_seed(*parts: object) -> int:
    """A bootstrap seed from a cell's identity (not Python's salted ``hash``)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")


@dataclass(frozen=True)
class CI:
    lo: float
    hi: float
    method: str  # "recomputed" | "per-case mean" | "per-case mean (approx.)"
    n_cases: int
    n_groups: int


@dataclass(frozen=True)
class Paired:
    diff: float  # seed-mean of A minus seed-mean of B on the shared cases
    lo: float
    hi: float
    p: float
    n_cases: int
    n_groups: int
    method: str


def scored_splits(metric: str) -> tuple[str, ...]:
    """The per-case splits a metric is computed on: the test set, and for ``*_avg`` (mean over the
    in-distribution and out-of-distribution test sets) the OOD sets (``ood:<name>``) as well."""
    return ("test", "ood:") if metric.endswith("_avg") else ("test",)


def test_cases(rec: ResultRecord, metric: str | None = None) -> dict[str, dict[str, Any]]:
    """The per-case records ``metric`` (default: the primary) is computed on, by (split-qualified)
    case id."""
    keep = scored_splits(metric or rec.primary_metric)
    out = {}
    for c in rec.per_case:
        if c.split == "test" or (c.split.startswith("ood:") and "ood:" in keep):
            out[c.case if c.split == "test" else f"{c.split}\x1f{c.case}"] = c.model_dump()
    return out


def _shared(records: Sequence[ResultRecord], metric: str | None = None) -> tuple[list[str], list[str], list[dict[str, dict[str, Any]]], list[str]]:
    """Case ids scored in every record (sorted), their groups, each record's cases by id, and
    each case's split (the bootstrap resamples within each split)."""
    by_rec = [test_cases(r, metric) for r in records]
    if not by_rec or any(not d for d in by_rec):
        return [], [], by_rec, []
    ids = set(by_rec[0])
    for d in by_rec[1:]:
        ids &= set(d)
    cases = sorted(ids)
    groups = [str(by_rec[0][c]["group"]) for c in cases]
    splits = [str(by_rec[0][c]["split"]) for c in cases]
    return cases, groups, by_rec, splits


def _mean_key(metric: str, records: Sequence[ResultRecord], by_rec: list[dict[str, dict[str, Any]]]) -> str | None:
    """Where a metric's per-case value sits when it is a mean of per-case scores: ``score`` for the
    primary metric, else a key of its own name (``iou``, ``dice_clean``, ``dice3d``); None when the
    metric is neither recomputable nor in the per-case records (no interval then)."""
    if metric in RECOMPUTED or metric.endswith("_avg") or metric == records[0].primary_metric:
        return "score"
    return metric if any(metric in c and c[metric] is not None for d in by_rec for c in d.values()) else None


def _weights(groups: list[str], splits: list[str], n_boot: int, seed: int) -> np.ndarray:
    return _cached_weights(tuple(groups), tuple(splits), n_boot, seed)


@functools.lru_cache(maxsize=8)
def _cached_weights(groups: tuple[str, ...], splits: tuple[str, ...], n_boot: int, seed: int) -> np.ndarray:
    """The cells of one leaderboard column share a seed (common random numbers), so their CIs and
    paired tests reuse one draw whenever they scored the same cases; read-only, as it is shared."""
    w = resample_weights(list(groups), n_boot, seed, strata=list(splits) if len(set(splits)) > 1 else None)
    w.flags.writeable = False
    return w


def _seed_mean(metric: str, by_rec: list[dict[str, dict[str, Any]]], cases: list[str], w: np.ndarray, key: str = "score") -> tuple[np.ndarray, str]:
    vals, methods = [], set()
    for d in by_rec:
        v, m = weighted_metric(metric, [d[c] for c in cases], w, key)
        vals.append(v)
        methods.add(m)
    with np.errstate(invalid="ignore"):
        return np.mean(np.stack(vals), axis=0), (METHOD_MEAN if METHOD_MEAN in methods else methods.pop())


def _metric_of(records: Sequence[ResultRecord]) -> str:
    names = {r.primary_metric for r in records}
    if len(names) != 1:
        raise ValueError(f"records mix primary metrics {sorted(names)}")
    return names.pop()


def _own_interval(records: Sequence[ResultRecord], metric: str) -> CI | None:
    """A protocol that bootstraps its own metric the right way (similarity queries: whole patients
    resampled, each triplet weighted by its members' multiplicities) records ``<metric>_ci_low/high``;
    per-case records (per anchor) cannot reproduce that. One seed: its interval as recorded; several:
    the mean of their bounds, marked approximate."""
    lows = [r.metrics.get(f"{metric}_ci_low") for r in records]
    highs = [r.metrics.get(f"{metric}_ci_high") for r in records]
    if any(v is None for v in lows + highs):
        return None
    method = "recorded by the protocol" + (" (approx.)" if len(records) > 1 else "")
    n = len(records[0].per_case)
    return CI(float(np.mean(lows)), float(np.mean(highs)), method, n, len({c.group for c in records[0].per_case}))


def _shown(records: Sequence[ResultRecord], metric: str) -> float:
    """The seed-mean of ``metric`` as the records state it (their ``primary`` for the primary)."""
    vals = [r.primary if metric == r.primary_metric else r.metrics.get(metric) for r in records]
    return float(np.mean([np.nan if v is None else float(v) for v in vals]))


def cell_ci(records: Sequence[ResultRecord], *, n_boot: int = DEFAULT_BOOT, alpha: float = 0.05, seed: int = 0, metric: str | None = None) -> CI | None:
    """Percentile CI of the seed-mean of ``metric`` (default: the records' primary metric),
    resampling whole patients/volumes.

    None when the records carry no per-case values of it. The method is ``per-case mean (approx.)``
    when the value obtained from the per-case records with every case once differs from the metric
    shown (the metric cannot be recomputed exactly from them; the interval is a stand-in).
    """
    if not records:
        return None
    metric = metric or _metric_of(records)
    own = _own_interval(records, metric)
    if own is not None:
        return own
    cases, groups, by_rec, splits = _shared(records, metric)
    key = _mean_key(metric, records, by_rec) if cases else None
    if key is None:
        return None
    w = _weights(groups, splits, n_boot, seed)
    boot, method = _seed_mean(metric, by_rec, cases, w, key)
    full, _ = _seed_mean(metric, by_rec, cases, np.ones((1, len(cases))), key)
    # a recomputed metric can still differ from the one shown (e.g. the paper's slice-pooled Dice
    # averaged per volume): the interval is then a stand-in, and the leaderboard marks it
    if not math.isclose(float(full[0]), _shown(records, metric), rel_tol=1e-6, abs_tol=1e-6):
        method = f"{METHOD_MEAN} (approx.)"
    lo, hi = percentile_ci(boot, alpha)
    return CI(lo, hi, method, len(cases), len(set(groups)))


def paired_test(
    records_a: Sequence[ResultRecord],
    records_b: Sequence[ResultRecord],
    *,
    n_boot: int = DEFAULT_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    metric: str | None = None,
) -> Paired | None:
    """Paired cluster bootstrap of (A - B) in ``metric`` (default: the primary) on the cases both
    scored; None without shared cases or per-case values of the metric."""
    if not records_a or not records_b:
        return None
    metric = metric or _metric_of([*records_a, *records_b])
    cases, groups, by_rec, splits = _shared([*records_a, *records_b], metric)
    key = _mean_key(metric, [*records_a, *records_b], by_rec) if cases else None
    if key is None:
        return None
    na = len(records_a)
    w = _weights(groups, splits, n_boot, seed)
    ones = np.ones((1, len(cases)))
    a_boot, ma = _seed_mean(metric, by_rec[:na], cases, w, key)
    b_boot, mb = _seed_mean(metric, by_rec[na:], cases, w, key)
    a_full, _ = _seed_mean(metric, by_rec[:na], cases, ones, key)
    b_full, _ = _seed_mean(metric, by_rec[na:], cases, ones, key)
    d = a_boot - b_boot
    d = d[np.isfinite(d)]
    diff = float(a_full[0] - b_full[0])
    if d.size == 0 or not math.isfinite(diff):
        return Paired(diff, float("nan"), float("nan"), float("nan"), len(cases), len(set(groups)), ma)
    lo, hi = percentile_ci(d, alpha)
    b = d.size
    p = min(1.0, 2 * min((1 + np.sum(d <= 0)) / (b + 1), (1 + np.sum(d >= 0)) / (b + 1)))
    return Paired(diff, lo, hi, float(p), len(cases), len(set(groups)), METHOD_MEAN if METHOD_MEAN in (ma, mb) else ma)


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of ``values`` (smallest first), ties sharing their average rank: scipy's
    ``rankdata(method="average")`` without importing scipy.stats (a second of CPU)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + 1 + j + 1) / 2
        i = j + 1
    return ranks.tolist()


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="mergesort")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def aulc(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Area under the label-efficiency curve on a log-fraction axis, normalised by its width.

    ``AULC = sum_i (x_{i+1} - x_i) (m_i + m_{i+1}) / 2 / (x_max - x_min)`` with ``x = log10(fraction)``
    (trapezoid rule): the average metric over the log-fraction range, in the metric's own units, so
    an encoder that scores m at every fraction gets exactly m. NaN with fewer than two fractions.
    """
    pairs = sorted((float(f), float(v)) for f, v in zip(fractions, values))
    if len(pairs) < 2 or any(not math.isfinite(v) for _, v in pairs):
        return float("nan")
    x = np.log10([f for f, _ in pairs])
    y = np.array([v for _, v in pairs])
    width = x[-1] - x[0]
    if width <= 0:
        return float("nan")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / width)


def normalised(score: float, random: float, reference: float) -> float:
    """``(s - s_random) / (s_ref - s_random)``: 0 = random-init, 1 = the reference encoder.

    Direction-free (a lower-is-better metric has both differences negative). NaN when the two
    anchors coincide, since the task then cannot tell encoders apart on this scale.
    """
    den = reference - random
    if not all(math.isfinite(v) for v in (score, random, reference)) or abs(den) < 1e-12:
        return float("nan")
    return (score - random) / den
