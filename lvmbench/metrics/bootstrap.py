"""Cluster bootstrap over per-case records: whole patients/volumes are resampled, metrics recomputed.

A resample draws the test set's groups (patients, volumes) with replacement. It is held as one
weight per case — how many times the case's group was drawn — so every metric here takes a
``(B, n)`` weight matrix and returns ``B`` values in one vectorised pass; an all-ones row gives the
plain metric on the full test set.

Metrics that are not a mean of per-case scores are recomputed on each resample from the fields the
protocols keep per case:

- classification (``label``, ``pred``, ``prob``): accuracy, balanced accuracy, macro F1 and
  quadratic kappa from a weighted confusion matrix; AUC as a weighted Mann-Whitney statistic;
- detection (``n_gt``, ``dets`` = [label, score, matched] at IoU 0.5): AP50, accumulated as
  ``COCOeval`` does (101-point interpolated precision) with each image's detections counted
  ``weight`` times.

- averages over the test set and out-of-distribution sets (``*_avg``): the mean per-case score of
  each set, averaged over the sets (resampled within each set).

Any other metric (Dice, IoU, recall@k ...) is bootstrapped as the weighted mean of the per-case
``score``; :func:`weighted_metric` says which of the two it did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

REC_THRS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds

WeightedMetric = Callable[[Sequence[dict[str, Any]], np.ndarray], np.ndarray | None]


def resample_weights(groups: Sequence[str], n_boot: int, seed: int, strata: Sequence[str] | None = None) -> np.ndarray:
    """``(n_boot, n)`` case weights of a cluster bootstrap: groups drawn with replacement.

    Each resample draws as many groups as there are, uniformly with replacement (one vectorised
    draw of group indices, counted per row: several times faster than a multinomial per row).
    Groups are sorted first, so the draw depends on the set of groups and the seed only, not on
    the order the cases come in. With ``strata`` (e.g. the test set and each out-of-distribution
    set), groups are drawn within each stratum, so every resample keeps each set's size.
    """
    keys = np.asarray(groups, dtype=object).astype(str)
    if strata is not None:
        keys = np.char.add(np.char.add(np.asarray(strata, dtype=object).astype(str), "\x1f"), keys)
    uniq, inv = np.unique(keys, return_inverse=True)
    g = len(uniq)
    if g == 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    if strata is None:
        blocks = [np.arange(g)]
    else:
        stratum_of = np.array([u.split("\x1f", 1)[0] for u in uniq])
        blocks = [np.flatnonzero(stratum_of == st) for st in sorted(set(stratum_of))]
    row = np.arange(n_boot, dtype=np.int64)[:, None] * g
    counts = np.zeros(n_boot * g, dtype=np.int64)
    for idx in blocks:
        drawn = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        counts += np.bincount((row + drawn).ravel(), minlength=n_boot * g)
    return counts.reshape(n_boot, g)[:, inv].astype(np.float64)


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Equal-tailed percentile interval of bootstrap values (undefined resamples are dropped)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------- per-case mean


def weighted_mean_score(records: Sequence[dict[str, Any]], w: np.ndarray, key: str = "score") -> np.ndarray:
    """Mean of the per-case ``key`` under each weight row; cases without a value are left out."""
    s = np.array([np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=np.float64)
    ok = np.isfinite(s)
    ww = w[:, ok]
    tot = ww.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, ww @ s[ok] / np.where(tot > 0, tot, 1), np.nan)


def split_average(records: Sequence[dict[str, Any]], w: np.ndarray, name: str = "score_avg") -> np.ndarray | None:
    """Mean per-case value of each split (test, each OOD set), averaged over the splits: the
    paper's 'Avg' over in-distribution and out-of-distribution test sets. ``dice_avg`` averages the
    per-case ``dice`` where the records carry it (the primary ``score`` may be another metric)."""
    splits = sorted({str(r.get("split", "test")) for r in records})
    if len(splits) < 2:
        return None
    base = name[: -len("_avg")]
    key = base if any(r.get(base) is not None for r in records) else "score"
    per = []
    for sp in splits:
        idx = [i for i, r in enumerate(records) if str(r.get("split", "test")) == sp]
        per.append(weighted_mean_score([records[i] for i in idx], w[:, idx], key))
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(per, axis=1), axis=1)


# ---------------------------------------------------------------- classification


def _cls_arrays(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not records or not all("label" in r and "prob" in r for r in records):
        return None
    prob = np.asarray([r["prob"] for r in records], dtype=np.float64)
    labels = np.asarray([int(r["label"]) for r in records], dtype=np.int64)
    pred = np.asarray([int(r["pred"]) if "pred" in r else int(np.argmax(r["prob"])) for r in records], dtype=np.int64)
    return labels, pred, prob


def weighted_confusion(labels: np.ndarray, pred: np.ndarray, k: int, w: np.ndarray) -> np.ndarray:
    """``(B, k, k)`` confusion matrices (rows: truth, columns: prediction) under weight rows ``w``."""
    cell = labels * k + pred
    order = np.argsort(cell, kind="stable")
    present, starts = np.unique(cell[order], return_index=True)
    cm = np.zeros((len(w), k * k))
    if len(present):  # the weights of each cell's cases summed (whole numbers: exact in any order)
        cm[:, present] = np.add.reduceat(w[:, order], starts, axis=1)
    return cm.reshape(-1, k, k)


def cm_accuracy(cm: np.ndarray) -> np.ndarray:
    n = cm.sum(axis=(1, 2))
    return np.trace(cm, axis1=1, axis2=2) / np.maximum(n, 1e-300)


def cm_balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=2)
    diag = np.diagonal(cm, axis1=1, axis2=2)
    present = support > 0
    recall = np.divide(diag, support, out=np.zeros_like(diag), where=present)
    return np.where(present.any(axis=1), recall.sum(axis=1) / np.maximum(present.sum(axis=1), 1), 0.0)


def cm_macro_f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    # like sklearn: average over labels present in the truth or the predictions
    present = (cm.sum(axis=1) + cm.sum(axis=2)) > 0
    return np.where(present.any(axis=1), (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1), 0.0)


def cm_quadratic_kappa(cm: np.ndarray) -> np.ndarray:
    k = cm.shape[1]
    n = cm.sum(axis=(1, 2))
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    wq = (i - j) ** 2 / max((k - 1) ** 2, 1)
    expected = np.einsum("bi,bj->bij", cm.sum(axis=2), cm.sum(axis=1)) / np.maximum(n, 1e-300)[:, None, None]
    denom = (wq * expected).sum(axis=(1, 2))
    num = (wq * cm).sum(axis=(1, 2))
    return np.where((denom > 0) & (n > 0), 1.0 - num / np.where(denom > 0, denom, 1), 0.0)


def weighted_binary_auc(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC = P(score_pos > score_neg) + 0.5 P(tie) with case weights; NaN without both classes."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # one bin per distinct score
    wp = np.add.reduceat(w[:, order] * positive[order], starts, axis=1)
    wn = np.add.reduceat(w[:, order] * ~positive[order], starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    num = (wp * (below + 0.5 * wn)).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_auc(labels: np.ndarray, prob: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Binary: AUC of the positive-class probability. Multi-class: macro one-vs-rest over the
    classes present in each resample (as :func:`lvmbench.metrics.classification.auc`)."""
    k = prob.shape[1]
    if k == 2:
        return weighted_binary_auc(prob[:, 1], labels == 1, w)
    per = []
    support = []
    for c in range(k):
        pos = labels == c
        per.append(weighted_binary_auc(prob[:, c], pos, w))
        support.append(w[:, pos].sum(axis=1) > 0)
    per_a, present = np.stack(per, axis=1), np.stack(support, axis=1)
    n_present = present.sum(axis=1)
    vals = np.where(present, np.nan_to_num(per_a), 0.0).sum(axis=1)
    return np.where(n_present >= 2, vals / np.maximum(n_present, 1), np.nan)


def _cm_metric(fn: Callable[[np.ndarray], np.ndarray]) -> WeightedMetric:
    def metric(records: Sequence[dict[str, Any]], w: np.ndarray) -> np.ndarray | None:
        arrays = _cls_arrays(records)
        if arrays is None:
            return None
        labels, pred, prob = arrays
        return fn(weighted_confusion(labels, pred, prob.shape[1], w))

    return metric


def _auc_metric(records: Sequence[dict[str, Any]], w: np.ndarray) -> np.ndarray | None:
    arrays = _cls_arrays(records)
    if arrays is None:
        return None
    labels, _, prob = arrays
    return weighted_auc(labels, prob, w)


# ---------------------------------------------------------------- detection


# weight rows per block of the vectorised AP: bounds memory at about 8 * AP_BLOCK bytes per array
AP_BLOCK = 4_000_000


def _interpolated_precision(rc: np.ndarray, pr: np.ndarray) -> np.ndarray:
    """``(B, 101)``: per row, the envelope precision ``pr`` (non-increasing) at the first detection
    whose recall ``rc`` (non-decreasing) reaches each of COCO's thresholds, 0 where none does.

    ``reach`` = how many thresholds a detection's recall reaches; where it grows from ``p`` to ``k``
    (a change point), thresholds ``p .. k-1`` are first reached there: the value is written at ``p``
    and carried forward to ``k - 1``.
    """
    t = len(REC_THRS)
    reach = np.searchsorted(REC_THRS, rc, side="right")
    prev = np.concatenate([np.zeros((len(rc), 1), reach.dtype), reach[:, :-1]], axis=1)
    bi, ji = np.nonzero(reach > prev)
    start = np.zeros((len(rc), t + 1))
    has = np.zeros((len(rc), t + 1), bool)
    start[bi, prev[bi, ji]] = pr[bi, ji]
    has[bi, prev[bi, ji]] = True
    at = np.maximum.accumulate(np.where(has, np.arange(t + 1), 0), axis=1)
    q = np.take_along_axis(start, at, axis=1)[:, :t]
    q[np.arange(t)[None, :] >= reach[:, -1:]] = 0.0
    return q


def weighted_ap(records: Sequence[dict[str, Any]], w: np.ndarray) -> np.ndarray | None:
    """AP over classes with ground truth, from per-image match records, under each weight row.

    Equal to :func:`lvmbench.metrics.detection.ap_from_records` on the records repeated by weight
    (the detections of a repeated image tie in score and sit together after the stable sort, and a
    weighted step reaches the same interpolated precision as the repeated steps).

    Vectorised over the weight rows, and evaluated at the true positives only: recall grows only
    there, and a false positive's precision is below that of the detection before it, so the
    interpolated precision (the envelope read where recall first reaches each threshold) is the
    same over the true positives alone. A TP's counts are the weights of the TPs up to it and of the
    FPs ranked above it, cumulative sums of whole numbers, so exact: the same floats as a loop over
    resamples on all detections.
    """
    if not records or not all("n_gt" in r and "dets" in r for r in records):
        return None
    n = len(records)
    classes = sorted({int(c) for r in records for c in r["n_gt"]})
    out = np.full((len(w), len(classes)), np.nan)
    for ci, c in enumerate(classes):
        n_gt = np.array([float(r["n_gt"].get(str(c), r["n_gt"].get(c, 0))) for r in records])  # type: ignore[call-overload]
        img, score, matched = [], [], []
        for i, r in enumerate(records):
            for lab, s, m in r["dets"]:
                if int(lab) == c:
                    img.append(i)
                    score.append(float(s))
                    matched.append(bool(m))
        order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
        img_o = np.asarray(img, np.int64)[order] if img else np.zeros(0, np.int64)
        m_o = np.asarray(matched, bool)[order] if matched else np.zeros(0, bool)
        gt_w = w @ n_gt if n else np.zeros(len(w))
        rows = np.flatnonzero(gt_w > 0)  # no ground truth drawn: AP undefined (NaN) for this class
        tp_img, fp_img = img_o[m_o], img_o[~m_o]
        if tp_img.size == 0:
            out[rows, ci] = 0.0  # no true positive: precision 0 wherever recall is reached
            continue
        fp_above = np.cumsum(~m_o)[m_o]  # false positives ranked above each true positive
        step = max(1, AP_BLOCK // max(tp_img.size, fp_img.size))
        for b0 in range(0, len(rows), step):
            rb = rows[b0 : b0 + step]
            tp = np.cumsum(w[np.ix_(rb, tp_img)], axis=1)
            fp_cum = np.concatenate([np.zeros((len(rb), 1)), np.cumsum(w[np.ix_(rb, fp_img)], axis=1)], axis=1)
            fp = fp_cum[:, fp_above]
            rc = tp / gt_w[rb, None]
            pr = tp / (tp + fp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            out[rb, ci] = _interpolated_precision(rc, pr).mean(axis=1)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(out)
        return np.where(valid.any(axis=1), np.where(valid, out, 0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1), np.nan)


# ---------------------------------------------------------------- dispatch

RECOMPUTED: dict[str, WeightedMetric] = {
    "accuracy": _cm_metric(cm_accuracy),
    "balanced_accuracy": _cm_metric(cm_balanced_accuracy),
    "macro_f1": _cm_metric(cm_macro_f1),
    "qwk": _cm_metric(cm_quadratic_kappa),
    "kappa": _cm_metric(cm_quadratic_kappa),
    "auc": _auc_metric,
    "ap50": weighted_ap,
}

METHOD_RECOMPUTED = "recomputed"
METHOD_MEAN = "per-case mean"


def weighted_metric(name: str, records: Sequence[dict[str, Any]], w: np.ndarray, key: str = "score") -> tuple[np.ndarray, str]:
    """The metric ``name`` under each weight row, and how it was obtained (recomputed or the mean
    of per-case ``key`` values, when the records do not carry what the metric needs)."""
    fn = RECOMPUTED.get(name) or (functools.partial(split_average, name=name) if name.endswith("_avg") else None)
    if fn is not None:
        vals = fn(records, w)
        if vals is not None:
            return vals, METHOD_RECOMPUTED
    return weighted_mean_score(records, w, key), METHOD_MEAN
