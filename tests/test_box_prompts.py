"""Box prompts (lvmbench/protocols/prompt_boxes.py): boxes from masks against a brute-force loop,
jitter bounds, the empty-mask rules, and the mask-grid -> image (256 -> 1024) scaling SAM reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvmbench.protocols import prompt_boxes as pb


def brute_box(mask: np.ndarray):
    ys, xs = np.where(mask > 0)
    if len(xs) == 0:
        return None
    return [xs.min(), ys.min(), xs.max(), ys.max()]


def random_masks(n=40, h=23, w=31, seed=0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    m = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        if i % 7 == 0:
            continue  # empty
        k = g.integers(1, 6)
        m[i, g.integers(0, h, k), g.integers(0, w, k)] = g.integers(1, 4)
    return torch.from_numpy(m)


def test_boxes_match_brute_force_and_empty_masks_are_marked():
    masks = random_masks()
    boxes, fg = pb.boxes_from_masks(masks)
    for i in range(len(masks)):
        want = brute_box(masks[i].numpy())
        one = pb.box_from_mask(masks[i])
        if want is None:
            assert not fg[i] and one is None and boxes[i].tolist() == [0, 0, 0, 0]
        else:
            assert fg[i] and boxes[i].tolist() == want and one.tolist() == want


def test_jitter_moves_each_side_outward_within_bounds():
    size = 64
    boxes = torch.tensor([[10.0, 12.0, 30.0, 40.0], [0.0, 0.0, 63.0, 63.0], [60.0, 2.0, 62.0, 5.0]]).repeat(200, 1)
    out = pb.jitter(boxes, 20, size, torch.Generator().manual_seed(0))
    d = (out - boxes) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    assert (d >= 0).all(), "a side moved inward"
    unclipped = (out > 0) & (out < size)
    assert (d[unclipped] <= 19).all(), "numpy's randint(0, 20): at most 19 px"
    assert (out >= 0).all() and (out <= size).all()
    assert d[:, 0][boxes[:, 0] == 10].max() == 10 and d[:, 2][boxes[:, 2] == 30].max() == 19  # the whole range is drawn
    assert torch.equal(out, pb.jitter(boxes, 20, size, torch.Generator().manual_seed(0))), "seeded"
    assert torch.equal(pb.jitter(boxes, 0, size, torch.Generator()), boxes), "test boxes: no jitter"


def test_paper_random_box_for_empty_masks():
    """The paper's formula as its code has it (max(0, .) / min(1024, .) on a point drawn from
    N(0, 1024)), degenerate or off-image boxes included."""
    boxes = [pb.paper_random_box(256, 20, np.random.default_rng(s)) for s in range(200)]
    for s, b in enumerate(boxes):
        g = np.random.default_rng(s)
        y, x = g.normal(0, 1024, 2)
        j = g.integers(0, 20, 4)
        assert b.tolist() == pytest.approx([max(0, x - j[0]), max(0, y - j[1]), min(1024, x + j[2]), min(1024, y + j[3])], abs=1e-3)
    b = torch.stack(boxes)
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 1024).all()
    assert bool((b[:, 2] < b[:, 0]).any()), "off-image points give inverted boxes, as in the paper"


def test_mask_grid_to_sam_input_scaling():
    box = torch.tensor([[10.0, 20.0, 100.0, 200.0]])
    assert pb.to_image(box, 256, 1024).tolist() == [[40.0, 80.0, 400.0, 800.0]]
    # SAM's prompt encoder normalises by its input size: the same relative position as at 256
    from segment_anything.modeling import PromptEncoder

    pe = PromptEncoder(embed_dim=32, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    small = PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=16)
    small.load_state_dict(pe.state_dict())
    a = pe._embed_boxes(pb.to_image(torch.tensor([[8.0, 8.0, 248.0, 248.0]]), 256, 1024) - 0.5)
    b = small._embed_boxes(pb.to_image(torch.tensor([[0.5, 0.5, 15.5, 15.5]]), 16, 64) - 0.5)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("paper", [False, True])
def test_empty_ground_truth_rule(paper):
    """Clean rule: an image without the object gets no prompt and no score; the paper's rule
    prompts it with a random box (and scores it by the empty-empty = 1 convention)."""
    from types import SimpleNamespace

    from lvmbench.protocols.seg_data import Prepared
    from lvmbench.protocols.seg_prompt import Seg2DPrompt

    masks = [torch.zeros(64, 64, dtype=torch.uint8) for _ in range(3)]
    masks[1][10:30, 20:40] = 1
    prep = Prepared(cases=[SimpleNamespace(id=str(i), group=str(i), meta={}) for i in range(3)], images=[torch.zeros(3, 64, 64, dtype=torch.uint8)] * 3, masks=masks)
    hp = SimpleNamespace(image_size=64, prompt_classes=[1], paper_boxes=paper, box_jitter=2, eval_batch_size=4, hd95=False)
    proto = Seg2DPrompt()
    proto.encode = lambda ctx, model, images, hp, role: torch.zeros(len(images), 8, 4, 4)  # no encoder needed
    ps = proto.prompt_set(None, None, prep, hp, "test", np.random.default_rng(0), torch.Generator().manual_seed(0))
    if paper:
        assert ps.owner == [0, 1, 2] and ps.unprompted == 0
    else:
        assert ps.owner == [1] and ps.unprompted == 2
        assert ps.boxes.tolist() == [[5.0, 3.0, 9.0, 7.0]]  # pixels 4i of the 64 px mask on the 16 px grid; no jitter
    logits = torch.full((len(ps.owner), 16, 16), -1.0)
    metrics, records, _ = proto.score(ps, logits, hp, "test")
    assert metrics["dice"] == pytest.approx(2 / 3 if paper else 0.0, abs=1e-6)
    assert [r["score"] is None for r in records].count(True) == (0 if paper else 2)
