"""COCO AP through pycocotools on hand-made cases, and the per-image match records against it."""

from __future__ import annotations

import numpy as np
import pytest

from lvmbench.metrics.detection import (
    ImageBoxes,
    ap_from_records,
    box_iou,
    coco_metrics,
    counts_at,
    match_records,
    random_box_baseline,
)

NAMES = ["a", "b", "c"]


def gt(boxes, labels):
    return ImageBoxes(np.array(boxes, float), np.array(labels))


def pred(boxes, labels, scores):
    return ImageBoxes(np.array(boxes, float), np.array(labels), np.array(scores, float))


def test_perfect_predictions_score_one():
    g = [gt([[10, 10, 50, 60], [70, 20, 90, 45]], [0, 1]), gt([[5, 5, 30, 30]], [0])]
    p = [pred(x.boxes, x.labels, np.linspace(0.9, 0.5, len(x.labels))) for x in g]
    m = coco_metrics(g, p, NAMES)
    assert m["ap50"] == pytest.approx(1.0) and m["ap75"] == pytest.approx(1.0) and m["ap"] == pytest.approx(1.0)
    assert m["ap50/a"] == pytest.approx(1.0) and m["ap50/b"] == pytest.approx(1.0)
    assert "ap50/c" not in m  # no ground truth of class c: left out, as COCO does


def test_shifted_boxes_pass_iou_050_but_not_075():
    g = [gt([[0, 0, 100, 100]], [0])]
    # shifted by 20 px in x: IoU = 80*100 / (120*100) = 0.667
    p = [pred([[20, 0, 120, 100]], [0], [0.9])]
    assert box_iou(p[0].boxes, g[0].boxes)[0, 0] == pytest.approx(2 / 3)
    m = coco_metrics(g, p, NAMES)
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap75"] == pytest.approx(0.0)
    # shifted by 60 px: IoU = 40 / 160 = 0.25 -> a miss at every threshold
    far = coco_metrics(g, [pred([[60, 0, 160, 100]], [0], [0.9])], NAMES)
    assert far["ap50"] == pytest.approx(0.0)


def test_missing_half_the_boxes_gives_half_recall():
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    m = coco_metrics(g, [pred([[0, 0, 10, 10]], [0], [0.8])], NAMES)
    # precision 1 for recall thresholds 0, 0.01, ..., 0.50 (51 of 101 points), 0 beyond
    assert m["ap50"] == pytest.approx(51 / 101)
    assert m["ar100"] == pytest.approx(0.5)


def test_extra_boxes_hurt_only_when_they_outrank_true_ones():
    g = [gt([[0, 0, 10, 10]], [0])]
    low = coco_metrics(g, [pred([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [0.9, 0.1])], NAMES)
    high = coco_metrics(g, [pred([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [0.1, 0.9])], NAMES)
    assert low["ap50"] == pytest.approx(1.0)
    assert high["ap50"] == pytest.approx(0.5)  # precision 1/2 at every recall threshold
    wrong_class = coco_metrics(g, [pred([[0, 0, 10, 10]], [1], [0.9])], NAMES)
    assert wrong_class["ap50"] == pytest.approx(0.0)


def test_no_predictions_scores_zero():
    g = [gt([[0, 0, 10, 10]], [2])]
    m = coco_metrics(g, [ImageBoxes.empty(with_scores=True)], NAMES)
    assert m["ap50"] == 0.0 and m["ap50/c"] == 0.0


def _random_case(rng, n_img=12, k=3):
    gts, preds = [], []
    for _ in range(n_img):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (n, 2))
        wh = rng.uniform(4, 40, (n, 2))
        g = gt(np.concatenate([xy, xy + wh], 1), rng.integers(0, k, n))
        # predictions: jittered copies of some ground truth + random boxes, random scores
        keep = rng.random(n) < 0.7
        jit = g.boxes[keep] + rng.normal(0, 4, (int(keep.sum()), 4))
        m = int(rng.integers(0, 6))
        rxy = rng.uniform(0, 80, (m, 2))
        rb = np.concatenate([rxy, rxy + rng.uniform(4, 40, (m, 2))], 1)
        boxes = np.concatenate([jit, rb])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([np.where(rng.random(int(keep.sum())) < 0.85, g.labels[keep], rng.integers(0, k, int(keep.sum()))), rng.integers(0, k, m)])
        preds.append(pred(boxes, labels, rng.random(len(boxes))))
        gts.append(g)
    return gts, preds


@pytest.mark.parametrize("seed", range(8))
def test_records_reproduce_pycocotools_ap50(seed):
    """The brute-force matching + accumulation equals COCOeval's AP50, overall and per class."""
    rng = np.random.default_rng(seed)
    gts, preds = _random_case(rng)
    ref = coco_metrics(gts, preds, NAMES)
    records = match_records(gts, preds, 0.5)
    ours, per = ap_from_records(records)
    present = sorted({int(c) for g in gts for c in g.labels})
    if not present:
        return
    assert ours == pytest.approx(ref["ap50"], abs=1e-12)
    for c in present:
        assert per[c] == pytest.approx(ref[f"ap50/{NAMES[c]}"], abs=1e-12)
    # at IoU 0.75 the records agree with COCO's AP75 too
    assert ap_from_records(match_records(gts, preds, 0.75))[0] == pytest.approx(ref["ap75"], abs=1e-12)


def test_counts_at_threshold():
    g = gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])
    p = pred([[0, 0, 10, 10], [50, 50, 60, 60], [20, 21, 30, 30]], [0, 0, 0], [0.9, 0.7, 0.3])
    (r,) = match_records([g], [p])
    assert counts_at(r, 0.5) == (1, 1, 1)
    assert counts_at(r, 0.0) == (2, 1, 0)


def test_random_boxes_score_far_below_a_good_detector():
    rng = np.random.default_rng(0)
    gts, _ = _random_case(rng, n_img=20)
    sizes = [(120, 120)] * len(gts)
    prior = [((b[2] - b[0]) / 120, (b[3] - b[1]) / 120, int(lab)) for g in gts for b, lab in zip(g.boxes, g.labels)]
    chance = random_box_baseline(gts, sizes, prior, NAMES, seed=0)
    good = coco_metrics(gts, [pred(g.boxes + 1, g.labels, np.ones(len(g.labels))) for g in gts], NAMES, sizes)
    assert 0.0 <= chance["ap50"] < 0.3 < good["ap50"]


def test_mmdet_coco_metric_agrees_on_the_same_predictions(tmp_path):
    """The metric both backends share equals mmdet's own CocoMetric on identical predictions."""
    pytest.importorskip("mmdet", reason="mmdet is not installed (scripts/build_mmcv.sh)")
    from lvmbench.protocols.det.mmdet_backend import MMDetBackend

    why = MMDetBackend.unavailable()
    if why:
        pytest.skip(f"mmdet backend unavailable: {why}")
    import json

    import torch
    from mmdet.evaluation import CocoMetric

    rng = np.random.default_rng(3)
    gts, preds = _random_case(rng, n_img=10)
    images, anns = [], []
    for i, g in enumerate(gts):
        images.append({"id": i, "file_name": f"{i}.png", "height": 120, "width": 120})
        for b, lab in zip(g.boxes, g.labels):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
    ann_file = tmp_path / "gt.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": k, "name": n} for k, n in enumerate(NAMES)]}, default=float), encoding="utf-8")
    metric = CocoMetric(ann_file=str(ann_file), metric="bbox", classwise=False)
    metric.dataset_meta = {"classes": NAMES}
    batch = [{"img_id": i, "ori_shape": (120, 120), "pred_instances": {"bboxes": torch.tensor(p.boxes), "scores": torch.tensor(p.scores), "labels": torch.tensor(p.labels)}} for i, p in enumerate(preds)]
    metric.process({}, batch)
    theirs = metric.evaluate(len(batch))
    ours = coco_metrics(gts, preds, NAMES)
    assert ours["ap50"] == pytest.approx(theirs["coco/bbox_mAP_50"], abs=1e-3)  # mmdet rounds to 3 places
    assert ours["ap"] == pytest.approx(theirs["coco/bbox_mAP"], abs=1e-3)
