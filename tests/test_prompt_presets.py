"""The prompt presets against transcriptions of the rules they follow.

Each oracle below is the published rule written out here, in this test's own words, from reading
the source named in its docstring; it draws from the same numpy ``RandomState`` (the generator
behind ``np.random.*``) as lvmbench, so equal masks and equal seeds must give equal prompts.
Python's ``random.randint(a, b)`` (MedSAM) is inclusive of b: its stand-in here is
``RandomState.randint(a, b + 1)``.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from lvmbench.data.prompts.boxes import jitter_box, tight_box
from lvmbench.data.prompts.clicks import correction_click, deepest_pixel, initial_points
from lvmbench.data.prompts.draw import draw_item
from lvmbench.data.prompts.rules import PRESETS, PromptRule


def masks(n=60, size=256, seed=1) -> list[np.ndarray]:
    """Blobs of every size (one pixel to most of the grid), several per mask, touching the edges
    now and then, and empty masks."""
    g = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        if i % 6 != 0:
            for _ in range(1 + i % 3):
                cy, cx = g.integers(-10, size + 10, 2)
                r = g.integers(0, size // 3)
                m |= ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        out.append(m)
    return out


# ---------------------------------------------------------------- LVM-Med


def lvmmed_oracle(mask: np.ndarray, rs: np.random.RandomState) -> list[float]:
    """LVM-Med dataloader/dataset.py::get_bbox_from_mask, 2D branch: an empty mask -> a point
    (y, x) from normal(0, 1024, 2), each side moved by randint(0, 20) (x_min, x_max, y_min, y_max),
    clipped to [0, 1024]; otherwise the extremes of mask > 0, the same four moves, clipped to
    [0, W] / [0, H]."""
    if not (mask > 0).any():
        y, x = rs.normal(0, 1024, 2)
        x0, x1, y0, y1 = x, x, y, y
        lo, hx, hy = 0, 1024, 1024
    else:
        ys, xs = np.where(mask > 0)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        lo, (hy, hx) = 0, mask.shape
    x0 = max(lo, x0 - rs.randint(0, 20))
    x1 = min(hx, x1 + rs.randint(0, 20))
    y0 = max(lo, y0 - rs.randint(0, 20))
    y1 = min(hy, y1 + rs.randint(0, 20))
    return [float(x0), float(y0), float(x1), float(y1)]


@pytest.mark.parametrize("split", ["train", "val", "test", "ood:X"])
def test_lvmmed_preset_is_get_bbox_from_mask(split):
    rule = PromptRule.model_validate({"preset": "lvmmed"})
    for i, m in enumerate(masks()):
        got = draw_item(m, rule, split, np.random.RandomState(i))
        assert got.prompted and got.empty == (not m.any())
        assert got.box == pytest.approx(lvmmed_oracle(m, np.random.RandomState(i))), f"mask {i}"


# ---------------------------------------------------------------- MedSAM


def medsam_train_oracle(mask: np.ndarray, rs: np.random.RandomState) -> list[float]:
    """MedSAM train_one_gpu.py::NpyDataset.__getitem__ (bbox_shift = 20, masks at 1024): the
    extremes, each side moved by random.randint(0, 20) in the order x_min, x_max, y_min, y_max,
    clipped to [0, W] / [0, H]."""
    ys, xs = np.where(mask > 0)
    h, w = mask.shape
    x0 = max(0, xs.min() - rs.randint(0, 21))
    x1 = min(w, xs.max() + rs.randint(0, 21))
    y0 = max(0, ys.min() - rs.randint(0, 21))
    y1 = min(h, ys.max() + rs.randint(0, 21))
    return [float(x0), float(y0), float(x1), float(y1)]


def medsam_test_oracle(mask: np.ndarray) -> list[float]:
    """MedSAM comparisons/SAM/infer_SAM_2D_npz.py: each side exactly bbox_shift = 20 px out at
    1024, clipped to [0, W] / [0, H]."""
    ys, xs = np.where(mask > 0)
    h, w = mask.shape
    return [float(max(0, xs.min() - 20)), float(max(0, ys.min() - 20)), float(min(w, xs.max() + 20)), float(min(h, ys.max() + 20))]


def test_medsam_preset_is_medsams_training_jitter_and_fixed_comparison_box():
    rule = PromptRule.model_validate({"preset": "medsam"})
    assert rule.resolution == 1024 and rule.redrawn("train") and not rule.redrawn("test")
    for i, m in enumerate(masks(n=24, size=1024)):
        if not m.any():
            assert not draw_item(m, rule, "test", np.random.RandomState(i)).prompted, "MedSAM prompts labels present only"
            continue
        test = draw_item(m, rule, "test", np.random.RandomState(i))
        assert test.box == medsam_test_oracle(m)
        base = draw_item(m, rule, "train", np.random.RandomState(i))
        assert base.box == tight_box(m).tolist(), "training boxes are stored unjittered and redrawn at every use"
        kind, px = rule.split_jitter("train")
        got = jitter_box(np.array(base.box), kind, px, rule.resolution, np.random.RandomState(i))
        assert got.tolist() == medsam_train_oracle(m, np.random.RandomState(i))


# ---------------------------------------------------------------- SAM-Med2D


def components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components by flood fill, numbered in row-major order of their first pixel
    (skimage.measure.label's numbering)."""
    seen = np.zeros(mask.shape, bool)
    out = []
    h, w = mask.shape
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                comp, q = [], deque([(y, x)])
                seen[y, x] = True
                while q:
                    cy, cx = q.popleft()
                    comp.append((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                                seen[ny, nx] = True
                                q.append((ny, nx))
                out.append(comp)
    return out


def sam_med2d_box_oracle(mask: np.ndarray, rs: np.random.RandomState, max_pixel: int) -> list[float]:
    """SAM-Med2D utils.py::get_boxes_from_mask(box_num=1, std=0.1): regionprops boxes (min_row,
    min_col, max_row + 1, max_col + 1); with at least one region, the largest by area (a stable
    sort, descending); noise = min(max_pixel, int(min(w, h) * 0.1 * 5)); x then y drawn with
    randint(-noise, noise), 0 when that raises (noise 0); both corners shifted by them."""
    regions = components(mask > 0)
    best = sorted(regions, key=len, reverse=True)[0]  # noqa: FURB192 - the source sorts (stable: the first of equal areas)
    ys, xs = [p[0] for p in best], [p[1] for p in best]
    y0, x0, y1, x1 = min(ys), min(xs), max(ys) + 1, max(xs) + 1
    width, height = abs(x1 - x0), abs(y1 - y0)
    noise = min(max_pixel, int(min(width, height) * 0.1 * 5))
    try:
        nx = rs.randint(-noise, noise)
    except ValueError:
        nx = 0
    try:
        ny = rs.randint(-noise, noise)
    except ValueError:
        ny = 0
    return [float(x0 + nx), float(y0 + ny), float(x1 + nx), float(y1 + ny)]


def sam_med2d_points_oracle(mask: np.ndarray, k: int, rs: np.random.RandomState) -> tuple[list, list]:
    """SAM-Med2D utils.py::init_point_sampling: object/background pixel lists as (x, y) in
    row-major order; k = 1: one object pixel by randint (background, label 0, if none); k > 1:
    k // 2 object and the rest background pixels by choice with replacement, then a permutation."""
    fg = [(x, y) for y, x in np.argwhere(mask == 1)]
    bg = [(x, y) for y, x in np.argwhere(mask == 0)]
    if k == 1:
        if fg:
            return [fg[rs.randint(len(fg))]], [1]
        return [bg[rs.randint(len(bg))]], [0]
    n_fg, n_bg = k // 2, k - k // 2
    pts = [fg[i] for i in rs.choice(len(fg), n_fg, replace=True)] + [bg[i] for i in rs.choice(len(bg), n_bg, replace=True)]
    labels = [1] * n_fg + [0] * n_bg
    order = rs.permutation(k)
    return [pts[i] for i in order], [labels[i] for i in order]


def test_the_shift_bound_is_half_the_short_side():
    assert all(int(n * 0.1 * 5) == n // 2 for n in range(5000))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_sam_med2d_preset_is_get_boxes_from_mask_and_init_point_sampling(k):
    rule = PromptRule.model_validate({"preset": "sam-med2d", "points": k})
    for i, m in enumerate(masks(n=30, size=64, seed=2)):
        if not m.any():
            continue
        # test split: TestingDataset passes max_pixel = 0 (no shift); then the points, same generator
        got = draw_item(m, rule, "test", np.random.RandomState(i))
        rs = np.random.RandomState(i)
        assert got.box == sam_med2d_box_oracle(m, rs, 0), f"mask {i}"
        pts, labels = sam_med2d_points_oracle(m, k, rs)
        assert got.points == [[float(x), float(y)] for x, y in pts] and got.labels == labels
        # training: the largest component's box shifted by up to 5 px (redrawn; here drawn once)
        base = draw_item(m, rule, "train", np.random.RandomState(i)).box
        moved = jitter_box(np.array(base), "shift", 5, 64, np.random.RandomState(i + 100))
        assert moved.tolist() == sam_med2d_box_oracle(m, np.random.RandomState(i + 100), 5)


def sam_med2d_click_oracle(pred: np.ndarray, gt: np.ndarray, rs: np.random.RandomState) -> tuple[float, float, int]:
    """SAM-Med2D utils.py::select_random_points(point_num=1): error = pred != gt; one index by
    choice(n, 1, replace=True) over argwhere(error) (row-major); label 1 where gt is 1 and pred 0,
    0 where pred is 1 and gt 0; the point is (x, y)."""
    idx = np.argwhere(pred != gt)
    y, x = idx[rs.choice(len(idx), 1, replace=True)][0]
    label = 1 if (pred[y, x] == 0 and gt[y, x] == 1) else 0
    return float(x), float(y), label


def test_error_uniform_click_is_select_random_points():
    g = np.random.default_rng(5)
    for i in range(40):
        gt = (g.random((32, 32)) < 0.3).astype(np.uint8)
        pred = (g.random((32, 32)) < 0.3).astype(np.uint8)
        got = correction_click(pred, gt, "error-uniform", np.random.RandomState(i))
        assert got == sam_med2d_click_oracle(pred, gt, np.random.RandomState(i))
        x, y, _ = got
        assert pred[int(y), int(x)] != gt[int(y), int(x)], "inside the error region"


# ---------------------------------------------------------------- interior clicks


def test_interior_click_is_the_deepest_pixel_of_the_largest_error_component():
    gt = np.zeros((40, 40), np.uint8)
    gt[5:25, 5:35] = 1  # 20 x 30 object
    pred = gt.copy()
    pred[5:25, 5:15] = 0  # missed: a 20 x 10 strip (200 px)
    pred[30:34, 30:34] = 1  # extra: 16 px
    x, y, lab = correction_click(pred, gt, "interior")
    assert lab == 1 and gt[int(y), int(x)] and not pred[int(y), int(x)]
    assert 9 <= x <= 10 and 9 <= y <= 20, "on the strip's midline, 5 px from its sides (the first such pixel in row-major order)"
    pred2 = gt.copy()
    pred2[0:4, 0:40] = 1  # 160 px extra, larger than the missed 0
    x, y, lab = correction_click(pred2, gt, "interior")
    assert lab == 0 and pred2[int(y), int(x)] and not gt[int(y), int(x)]
    assert correction_click(gt, gt, "interior") == (0.0, 0.0, -1), "nothing to correct: a padding point"


def test_interior_click_brute_force_and_deterministic():
    g = np.random.default_rng(7)
    for _ in range(25):
        gt = (g.random((24, 24)) < 0.5).astype(np.uint8)
        pred = (g.random((24, 24)) < 0.5).astype(np.uint8)
        a = correction_click(pred, gt, "interior")
        assert a == correction_click(pred, gt, "interior")
        x, y, lab = int(a[0]), int(a[1]), a[2]
        region = (gt & ~pred.astype(bool)) if lab == 1 else (pred & ~gt.astype(bool))
        comps = [c for c in components(region.astype(bool))]
        comp = next(c for c in comps if (y, x) in c)
        others = components((gt & ~pred.astype(bool)).astype(bool)) + components((pred & ~gt.astype(bool)).astype(bool))
        assert len(comp) == max(len(c) for c in others), "the largest error component"
        # deepest: distance to the nearest pixel outside the component (the frame counts as outside)
        inside = set(comp)

        def depth(p, inside=inside):
            return min(((p[0] - q0) ** 2 + (p[1] - q1) ** 2) for q0 in range(-1, 25) for q1 in range(-1, 25) if (q0, q1) not in inside)

        assert depth((y, x)) == max(depth(p) for p in comp)


def test_deepest_pixel_of_a_rectangle_is_its_centre():
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True  # 5 x 5: one pixel is 3 px from the outside
    assert deepest_pixel(m) == (4, 4)


def test_uniform_points_are_distinct_object_pixels():
    m = masks(n=8, size=48)[1]
    pts, labels = initial_points(m, 5, "uniform", np.random.RandomState(0))
    assert len({tuple(p) for p in pts.tolist()}) == 5 and all(m[int(y), int(x)] for x, y in pts) and labels.tolist() == [1] * 5


# ---------------------------------------------------------------- the typed block


def test_every_preset_resolves_and_overrides_are_named():
    for name in PRESETS:
        rule = PromptRule.model_validate({"preset": name})
        assert rule.label() == name and rule.overrides() == []
    r = PromptRule.model_validate({"preset": "lvmmed", "jitter_px": 10, "iterations": 8})
    assert r.jitter_px == 10 and r.label() == "lvmmed+jitter_px+iterations" and r.redraw is False
    assert PromptRule.model_validate({}).preset == "tight"
    with pytest.raises(ValueError, match="a box or points"):
        PromptRule.model_validate({"box": "none"})


def test_bad_prompt_settings_are_one_line_naming_the_key():
    from lvmbench.protocols.base import resolve_settings
    from lvmbench.tasks import get_task

    task = get_task("kvasir_seg")

    def err(block):
        spec = task.model_copy(update={"protocols": {**task.protocols, "seg2d-prompt": {**task.protocols["seg2d-prompt"], **block}}})
        with pytest.raises(Exception) as e:
            resolve_settings(spec, "seg2d-prompt")
        return str(e.value)

    msg = err({"prompt": {"preset": "lvmed"}})
    assert "protocols.seg2d-prompt.prompt.preset" in msg and "did you mean 'lvmmed'" in msg and "\n" not in msg
    msg = err({"prompt": {"jiter_px": 3}})
    assert "unknown setting 'protocols.seg2d-prompt.prompt.jiter_px'" in msg and "did you mean 'jitter_px'" in msg
    assert "write prompt: {jitter_px: 19}" in err({"box_jitter": 20})
    assert "write prompt: {preset: lvmmed}" in err({"paper_boxes": True})
    assert "got '3'" in err({"prompt": {"points": "3"}}) or "valid integer" in err({"prompt": {"points": "3"}})
