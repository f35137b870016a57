"""Segmentation metrics against independent references: MONAI's Dice/IoU, a brute-force HD95, and
LVM-Med's Dice + CE loss formula written out by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from lvmbench.metrics.segmentation import EPS, hd95, paper_score, per_sample_overlap, volume_overlap
from lvmbench.protocols.seg_scores import clean_scores, summarize_clean
from lvmbench.protocols.seg_train import dice_ce_loss

warnings.filterwarnings("ignore", category=FutureWarning)


def onehot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), k).movedim(-1, 1).float()


def random_labels(rng, shape, k, empty_first=False):
    lab = torch.from_numpy(ndimage.median_filter(rng.integers(0, k, shape), size=3)).long()
    if empty_first:
        lab[0] = 0  # one sample with no foreground at all
    return lab


@pytest.mark.parametrize("k", [2, 4])
def test_per_image_dice_iou_match_monai(k):
    """Paper metric: per image and class; MONAI with ignore_empty=False scores empty/empty as 1."""
    from monai.metrics import compute_dice, compute_iou

    rng = np.random.default_rng(k)
    target = random_labels(rng, (6, 24, 20), k, empty_first=True)
    pred = random_labels(rng, (6, 24, 20), k)
    pred[0] = 0  # empty prediction on the empty image: must score exactly 1
    dice, iou = per_sample_overlap(pred, target, k)
    ref_d = compute_dice(onehot(pred, k), onehot(target, k), include_background=True, ignore_empty=False).numpy()
    ref_i = compute_iou(onehot(pred, k), onehot(target, k), include_background=True, ignore_empty=False).numpy()
    np.testing.assert_allclose(dice, ref_d, atol=1e-5)
    np.testing.assert_allclose(iou, ref_i, atol=1e-5)
    assert dice[0, 1:].tolist() == [1.0] * (k - 1)
    # the paper's per-image score is the mean over the foreground classes
    np.testing.assert_allclose(paper_score(dice, range(1, k)), ref_d[:, 1:].mean(1), atol=1e-5)


def test_paper_dice_epsilon_and_lvmmed_formula():
    """(2|P∩G| + eps) / (|P| + |G| + eps) with eps = 1e-6: a prediction on an empty image scores ~0."""
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    p = t.clone()
    p[0, 2, 2] = 1
    dice, iou = per_sample_overlap(p, t, 2)
    assert dice[0, 1] == pytest.approx(EPS / (1 + EPS))
    assert iou[0, 1] == pytest.approx(EPS / (1 + EPS))


def test_volumetric_overlap_matches_monai_on_a_volume():
    from monai.metrics import compute_dice, compute_iou

    rng = np.random.default_rng(3)
    k = 3
    target = random_labels(rng, (10, 16, 18), k)
    pred = random_labels(rng, (10, 16, 18), k)
    dice, iou = volume_overlap(pred, target, k)
    ref_d = compute_dice(onehot(pred[None], k), onehot(target[None], k), include_background=True, ignore_empty=False)[0].numpy()
    ref_i = compute_iou(onehot(pred[None], k), onehot(target[None], k), include_background=True, ignore_empty=False)[0].numpy()
    np.testing.assert_allclose(dice, ref_d, atol=1e-5)
    np.testing.assert_allclose(iou, ref_i, atol=1e-5)
    # pooled over voxels, not the mean of per-slice scores
    per_slice, _ = per_sample_overlap(pred, target, k)
    assert not np.allclose(per_slice[:, 1].mean(), dice[1])


def brute_hd95(p: np.ndarray, t: np.ndarray, spacing) -> float:
    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing, dtype=float)

    d = cdist(surface(p), surface(t))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


@pytest.mark.parametrize("shape,spacing", [((40, 50), (1.0, 1.0)), ((12, 20, 24), (2.5, 0.7, 0.9))])
def test_hd95_matches_brute_force(shape, spacing):
    rng = np.random.default_rng(len(shape))
    for _ in range(3):
        t = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5  # blobs, not salt noise
        p = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
        assert t.any() and p.any()
        got = hd95(p.astype(int), t.astype(int), [1], spacing)[0]
        assert got == pytest.approx(brute_hd95(p, t, spacing), rel=1e-5)


def test_hd95_conventions_for_empty_masks():
    empty = np.zeros((8, 8), int)
    full = empty.copy()
    full[2:5, 2:5] = 1
    assert hd95(empty, empty, [1])[0] == 0.0
    assert np.isnan(hd95(full, empty, [1])[0]) and np.isnan(hd95(empty, full, [1])[0])
    # undefined cases are counted and left out of the mean
    rows = [clean_scores(full, full, 2, None, True), clean_scores(empty, full, 2, None, True)]
    metrics, undefined = summarize_clean(rows, ["background", "x"])
    assert metrics["hd95_clean"] == 0.0 and undefined["hd95_clean"] == 1
    assert metrics["dice_clean"] == pytest.approx((1.0 + EPS / (9 + EPS)) / 2)


def test_dice_ce_loss_is_lvmmed_formula():
    """CE + (1 - mean over classes of batch-pooled soft Dice, eps 1e-6), as utils/endtoend.py."""
    torch.manual_seed(0)
    k = 3
    logits = torch.randn(4, k, 10, 12)
    target = torch.randint(0, k, (4, 10, 12))
    prob = logits.softmax(1)
    oh = onehot(target, k)
    dices = []
    for c in range(k):
        inter = (prob[:, c] * oh[:, c]).sum()
        dices.append((2 * inter + 1e-6) / (prob[:, c].sum() + oh[:, c].sum() + 1e-6))
    expected = torch.nn.functional.cross_entropy(logits, target) + 1 - torch.stack(dices).mean()
    got = dice_ce_loss()(logits, target[:, None])
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
