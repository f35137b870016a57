"""Detection metrics: COCO AP through pycocotools, plus per-image match records.

``coco_metrics`` is the scoring path every backend shares: ground truth and predictions (xyxy pixel
boxes, 0-based labels) become in-memory COCO objects and ``COCOeval`` computes AP@[.5:.95], AP50
(LVM-Med's reported number), AP75, AP by object size, AR@100 and per-class AP/AP50.

``match_records`` repeats COCOeval's greedy matching at one IoU threshold (area 'all', 100 detections
per image and class, no crowd boxes) and keeps, per image, its ground-truth counts and each
detection's (label, score, matched) triple. ``ap_from_records`` accumulates those records exactly as
``COCOeval.accumulate`` does (101-point interpolated precision), so the dataset AP50 of any resample
of images (bootstrap CIs, paired comparisons) is recomputed without re-running COCOeval; a test holds
it equal to pycocotools. ``random_box_baseline`` scores random boxes with the same code.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

MAX_DETS = 100
REC_THRS = np.linspace(0.0, 1.00, 101)


@dataclass
class ImageBoxes:
    """Boxes of one image: ``boxes`` (N, 4) xyxy in pixels, ``labels`` (N,) 0-based, ``scores``
    (N,) for predictions (None for ground truth)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    @staticmethod
    def empty(with_scores: bool = False) -> "ImageBoxes":
        return ImageBoxes(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32) if with_scores else None)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        if len(self.labels) != len(self.boxes) or (self.scores is not None and len(self.scores) != len(self.boxes)):
            raise ValueError("boxes, labels and scores must have the same length")


def _to_coco(gts: Sequence[ImageBoxes], preds: Sequence[ImageBoxes], num_classes: int, sizes: Sequence[tuple[int, int]] | None):
    images, anns, dets = [], [], []
    for i, g in enumerate(gts):
        h, w = sizes[i] if sizes is not None else (1, 1)
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
        for b, lab in zip(g.boxes, g.labels):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1, "bbox": [float(b[0]), float(b[1]), bw, bh], "area": bw * bh, "iscrowd": 0})
    for i, p in enumerate(preds):
        assert p.scores is not None
        for b, lab, s in zip(p.boxes, p.labels, p.scores):
            dets.append({"image_id": i + 1, "category_id": int(lab) + 1, "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, dets


def coco_metrics(
    gts: Sequence[ImageBoxes],
    preds: Sequence[ImageBoxes],
    class_names: Sequence[str],
    sizes: Sequence[tuple[int, int]] | None = None,
) -> dict[str, float]:
    """COCO box metrics (fractions in [0, 1]) for aligned per-image ground truth and predictions.

    Classes without ground truth in ``gts`` are left out of the means (COCO's rule) and get no
    per-class entry. With no prediction at all every AP is 0.
    """
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction images")
    k = len(class_names)
    gt, dets = _to_coco(gts, preds, k, sizes)
    present = sorted({int(lab) for g in gts for lab in g.labels})
    keys = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100")
    if not dets or not present:
        out = dict.fromkeys(keys, 0.0)
        for c in present:
            out[f"ap50/{class_names[c]}"] = 0.0
            out[f"ap/{class_names[c]}"] = 0.0
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval writes -1 where a size range has no ground truth: such entries are left out.
    out = {k: float(s) for k, s in zip(keys, ev.stats) if s >= 0}
    # precision: [T iou, R recall, K class, A area, M maxdets]; area 'all' = 0, maxDets 100 = last
    prec = ev.eval["precision"]
    cat_ids = ev.params.catIds
    for c in present:
        ki = cat_ids.index(c + 1)
        p_all = prec[:, :, ki, 0, -1]
        p50 = prec[0, :, ki, 0, -1]
        out[f"ap/{class_names[c]}"] = float(p_all[p_all > -1].mean()) if (p_all > -1).any() else 0.0
        out[f"ap50/{class_names[c]}"] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes with COCO's area convention (no +1)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_image(gt: ImageBoxes, pred: ImageBoxes, iou_thr: float = 0.5, max_dets: int = MAX_DETS) -> dict:
    """COCOeval's greedy matching for one image: per class, detections in descending score order
    take the unmatched ground-truth box of highest IoU >= ``iou_thr``.

    Returns ``{"n_gt": {label: count}, "dets": [[label, score, matched], ...]}`` (JSON-ready).
    """
    assert pred.scores is not None
    n_gt: dict[int, int] = {}
    dets: list[list] = []
    for c in sorted(set(gt.labels.tolist()) | set(pred.labels.tolist())):
        g = gt.boxes[gt.labels == c]
        if len(g):
            n_gt[int(c)] = len(g)
        sel = np.flatnonzero(pred.labels == c)
        order = sel[np.argsort(-pred.scores[sel], kind="mergesort")][:max_dets]
        ious = box_iou(pred.boxes[order], g)
        taken = np.zeros(len(g), bool)
        for di, d in enumerate(order):
            best, m = min(iou_thr, 1 - 1e-10), -1
            for gi in range(len(g)):
                if taken[gi] or ious[di, gi] < best:
                    continue
                best, m = ious[di, gi], gi
            if m >= 0:
                taken[m] = True
            dets.append([int(c), float(pred.scores[d]), bool(m >= 0)])
    return {"n_gt": n_gt, "dets": dets}


def match_records(gts: Sequence[ImageBoxes], preds: Sequence[ImageBoxes], iou_thr: float = 0.5) -> list[dict]:
    return [match_image(g, p, iou_thr) for g, p in zip(gts, preds)]


def _class_ap(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> float:
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[order]).astype(np.float64)
    fp = np.cumsum(~matched[order]).astype(np.float64)
    rc = tp / n_gt
    pr = tp / (tp + fp + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
    idx = np.searchsorted(rc, REC_THRS, side="left")
    q = np.zeros(len(REC_THRS))
    ok = idx < len(pr)
    q[ok] = pr[idx[ok]]
    return float(q.mean())


def ap_from_records(records: Sequence[dict]) -> tuple[float, dict[int, float]]:
    """Mean AP (at the records' IoU threshold) over classes with ground truth, and per-class AP."""
    n_gt: dict[int, int] = {}
    scores: dict[int, list[float]] = {}
    matched: dict[int, list[bool]] = {}
    for r in records:
        for c, n in r["n_gt"].items():
            n_gt[int(c)] = n_gt.get(int(c), 0) + int(n)
        for c, s, m in r["dets"]:
            scores.setdefault(int(c), []).append(float(s))
            matched.setdefault(int(c), []).append(bool(m))
    per = {
        c: _class_ap(np.asarray(scores.get(c, []), np.float64), np.asarray(matched.get(c, []), bool), n)
        for c, n in sorted(n_gt.items())
        if n > 0
    }
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def counts_at(record: dict, score_thr: float) -> tuple[int, int, int]:
    """TP, FP, FN of one image's record for detections scoring at least ``score_thr``.

    Greedy matching runs in score order, so the matches of the kept (higher-scoring) detections are
    the same as in the full record."""
    kept = [m for _, s, m in record["dets"] if s >= score_thr]
    tp = sum(kept)
    return tp, len(kept) - tp, sum(record["n_gt"].values()) - tp


def random_box_predictions(
    sizes: Sequence[tuple[int, int]],
    prior: Sequence[tuple[float, float, int]],
    rng: np.random.Generator,
    per_image: int = MAX_DETS,
) -> list[ImageBoxes]:
    """Random detections: ``per_image`` boxes per image with (relative width, relative height, label)
    drawn from ``prior`` (the training boxes), centres uniform in the image, uniform scores.

    Drawing sizes and classes from the training boxes makes this a stronger chance level than
    uniform boxes: a detector must localise, not just know typical box shapes."""
    out = []
    prior_arr = np.asarray(prior, np.float64).reshape(-1, 3)
    for h, w in sizes:
        if not len(prior_arr):
            out.append(ImageBoxes.empty(with_scores=True))
            continue
        pick = prior_arr[rng.integers(0, len(prior_arr), per_image)]
        bw, bh = pick[:, 0] * w, pick[:, 1] * h
        cx, cy = rng.uniform(0, w, per_image), rng.uniform(0, h, per_image)
        x1, y1 = np.clip(cx - bw / 2, 0, w), np.clip(cy - bh / 2, 0, h)
        x2, y2 = np.clip(cx + bw / 2, 0, w), np.clip(cy + bh / 2, 0, h)
        out.append(ImageBoxes(np.stack([x1, y1, x2, y2], 1), pick[:, 2].astype(np.int64), rng.uniform(0, 1, per_image)))
    return out


def random_box_baseline(
    gts: Sequence[ImageBoxes],
    sizes: Sequence[tuple[int, int]],
    prior: Sequence[tuple[float, float, int]],
    class_names: Sequence[str],
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, float]:
    """Mean COCO metrics of ``repeats`` draws of random boxes (same metric code as the models)."""
    rng = np.random.default_rng(seed)
    runs = [coco_metrics(gts, random_box_predictions(sizes, prior, rng), class_names, sizes) for _ in range(repeats)]
    return {k: float(np.mean([r.get(k, 0.0) for r in runs])) for k in ("ap", "ap50", "ap75")}
