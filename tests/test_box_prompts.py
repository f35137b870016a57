"""Box geometry (lvmbench/data/prompts/boxes.py): boxes from masks against a brute-force loop,
jitter bounds of every kind (drawn once and redrawn), the random box of an empty mask, the
rule-grid -> image scaling SAM reads, and the empty-ground-truth rules of the prompt protocols."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lvmbench.data.prompts import boxes as bx
from lvmbench.data.prompts.draw import draw_items
from lvmbench.data.prompts.rules import PromptRule


def brute_box(mask: np.ndarray):
    ys, xs = np.where(mask > 0)
    if len(xs) == 0:
        return None
    return [xs.min(), ys.min(), xs.max(), ys.max()]


def random_masks(n=40, h=23, w=31, seed=0) -> np.ndarray:
    g = np.random.default_rng(seed)
    m = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        if i % 7 == 0:
            continue  # empty
        k = g.integers(1, 6)
        m[i, g.integers(0, h, k), g.integers(0, w, k)] = g.integers(1, 4)
    return m


def test_tight_boxes_match_brute_force_and_empty_masks_give_none():
    for m in random_masks():
        want = brute_box(m)
        got = bx.tight_box(m)
        assert (got is None) if want is None else got.tolist() == want
        if want is not None:
            assert bx.tight_box(m, end="past_last").tolist() == [want[0], want[1], want[2] + 1, want[3] + 1]


def test_outward_jitter_moves_each_side_out_within_bounds_and_is_seeded():
    size = 64
    base = np.array([10.0, 12.0, 30.0, 40.0])
    outs = np.array([bx.jitter_box(base, "outward", 19, size, np.random.RandomState(s)) for s in range(300)])
    d = (outs - base) * np.array([-1, -1, 1, 1])
    assert (d >= 0).all() and (d[:, [1, 2]] <= 19).all()
    assert d[:, 0].max() == 10 and d[:, 2].max() == 19 and d[:, 2].min() == 0, "clipped at 0; the whole 0..19 range drawn"
    assert np.array_equal(bx.jitter_box(base, "outward", 19, size, np.random.RandomState(3)), outs[3])
    assert bx.jitter_box(base, "none", 19, size, np.random.RandomState(0)).tolist() == base.tolist()
    assert bx.jitter_box(base, "fixed", 20, size, np.random.RandomState(0)).tolist() == [0.0, 0.0, 50.0, 60.0]


@pytest.mark.parametrize("kind,px", [("outward", 19), ("outward", 20), ("fixed", 20), ("shift", 5), ("none", 0)])
def test_redrawn_training_boxes_follow_the_same_rule(kind, px):
    size = 256
    base = torch.tensor([[100.0, 120.0, 140.0, 200.0], [0.0, 3.0, 250.0, 255.0], [50.0, 50.0, 53.0, 60.0]]).repeat(300, 1)
    gen = torch.Generator().manual_seed(0)
    out = bx.redraw_boxes(base, kind, px, size, gen)
    assert torch.equal(out, bx.redraw_boxes(base, kind, px, size, torch.Generator().manual_seed(0))), "seeded"
    if kind in ("outward", "fixed"):
        d = (out - base) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        assert (d >= 0).all() and (out[:, :2] >= 0).all() and (out[:, 2:] <= size).all()
        inner = d[0::3]  # the first box is never clipped
        assert (inner.max() == px) and ((inner.min() == 0) if kind == "outward" else (inner.min() == px))
    elif kind == "shift":
        shift = out - base
        assert torch.equal(shift[:, 0], shift[:, 2]) and torch.equal(shift[:, 1], shift[:, 3]), "the whole box moves"
        m = torch.tensor([5.0, 5.0, 1.0]).repeat(300)  # min(px, min(w, h) // 2): the 3 px wide box moves by [-1, 1)
        assert (shift[:, :2] >= -m[:, None]).all() and (shift[:, :2] < m[:, None]).all()
        assert shift[0::3, 0].min() == -5 and shift[0::3, 0].max() == 4
    else:
        assert torch.equal(out, base)


def test_random_box_for_empty_masks_is_lvmmeds_formula():
    """A point from N(0, 4R) (y drawn first), sides out by randint(0, px + 1), clipped to [0, 4R]:
    off-image and inverted boxes included, as in the paper."""
    boxes = [bx.random_box(256, "outward", 19, np.random.RandomState(s)) for s in range(200)]
    for s, b in enumerate(boxes):
        g = np.random.RandomState(s)
        y, x = g.normal(0, 1024, 2)
        j = [g.randint(0, 20) for _ in range(4)]
        assert b.tolist() == pytest.approx([max(0, x - j[0]), max(0, y - j[2]), min(1024, x + j[1]), min(1024, y + j[3])])
    b = np.stack(boxes)
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 1024).all() and bool((b[:, 2] < b[:, 0]).any())


def test_rule_grid_to_sam_input_scaling():
    """Boxes at the rule's grid (256) reach SAM's prompt encoder at image pixels (x 1024 / 256,
    LVM-Med's apply_boxes); the prompt encoder then sees the same relative position at any size."""
    from segment_anything.modeling import PromptEncoder

    from lvmbench.protocols.seg_prompt import PromptSeg

    ps = SimpleNamespace(boxes=torch.tensor([[10.0, 20.0, 100.0, 200.0]]), frame=256)
    got = PromptSeg.prompt_inputs(ps, SimpleNamespace(image_size=1024), slice(0, 1), None, None, None, "cpu")[0]
    assert got.tolist() == [[40.0, 80.0, 400.0, 800.0]]
    pe = PromptEncoder(embed_dim=32, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    small = PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=16)
    small.load_state_dict(pe.state_dict())
    a = pe._embed_boxes(torch.tensor([[8.0, 8.0, 248.0, 248.0]]) * 4 - 0.5)
    b = small._embed_boxes(torch.tensor([[0.5, 0.5, 15.5, 15.5]]) * 4 - 0.5)
    torch.testing.assert_close(a, b)


def test_fill_boxes_fills_the_box_at_the_mask_grid():
    logits = bx.fill_boxes(torch.tensor([[4.0, 8.0, 12.0, 16.0]]), 16, 0.5)  # a 32 px rule grid, a 16 px mask
    want = torch.full((16, 16), -1.0)
    want[4:9, 2:7] = 1.0
    assert torch.equal(logits[0], want)


@pytest.mark.parametrize("empty", ["skip", "random_box"])
def test_empty_ground_truth_rule(empty):
    """skip: an image without the object gets no prompt and no score; random_box: LVM-Med's random
    box, scored by the empty-empty = 1 convention."""
    from lvmbench.protocols.seg_data import Prepared
    from lvmbench.protocols.seg_prompt import Seg2DPrompt

    masks = [torch.zeros(64, 64, dtype=torch.uint8) for _ in range(3)]
    masks[1][10:30, 20:40] = 1
    prep = Prepared(cases=[SimpleNamespace(id=str(i), group=str(i), meta={}) for i in range(3)], images=[torch.zeros(3, 64, 64, dtype=torch.uint8)] * 3, masks=masks)
    rule = PromptRule.model_validate({"preset": "tight", "empty": empty, "resolution": 64})
    hp = SimpleNamespace(image_size=64, prompt_classes=[1], prompt=rule, eval_batch_size=4, hd95=False)
    proto = Seg2DPrompt()
    proto.encode = lambda ctx, model, images, hp, role: torch.zeros(len(images), 8, 4, 4)  # no encoder needed
    prompts = draw_items(torch.stack(masks), [(str(i), None) for i in range(3)], rule, "test", seed=0)
    ps = proto.prompt_set(None, None, prep, hp, "test", prompts, np.random.default_rng(0))
    if empty == "random_box":
        assert ps.owner == [0, 1, 2] and ps.unprompted == 0 and ps.empty.tolist() == [True, False, True]
    else:
        assert ps.owner == [1] and ps.unprompted == 2
        assert ps.boxes.tolist() == [[20.0, 10.0, 39.0, 29.0]]  # the tight box at the 64 px rule grid
    logits = torch.full((len(ps.owner), 16, 16), -1.0)
    metrics, records, _ = proto.score(ps, logits, hp, "test")
    assert metrics["dice"] == pytest.approx(2 / 3 if empty == "random_box" else 0.0, abs=1e-6)
    assert [r["score"] is None for r in records].count(True) == (0 if empty == "random_box" else 2)
