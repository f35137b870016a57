"""One image's (or slice's) prompt under a rule, a split and a seed.

Each item draws from its own ``RandomState``, seeded from (seed, case id, slice): an item's prompt
does not depend on which other cases are in the split or on their order, so a prompt file can be
extended, checked item by item, and a label-fraction subset sees the same prompts as the full set.
Within an item the draws follow the transcribed code: the box (its jitter, or the random box of an
empty mask) first, then the points.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.nn import functional as F

from lvmbench.data.prompts.boxes import jitter_box, random_box, tight_box
from lvmbench.data.prompts.clicks import initial_points
from lvmbench.data.prompts.items import ItemPrompt
from lvmbench.data.prompts.rules import PromptRule


def item_seed(seed: int, case: str, slice_: int | None) -> int:
    """A 32-bit seed for one item: stable across processes and Python versions (no ``hash()``)."""
    text = f"{seed}\x1f{case}\x1f{'' if slice_ is None else slice_}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little")


def draw_item(mask: np.ndarray, rule: PromptRule, split: str, rs: np.random.RandomState, case: str = "", slice_: int | None = None) -> ItemPrompt:
    """The prompt of one (R, R) object mask for ``split`` (train | val | test | ood:<name>)."""
    m = np.asarray(mask) > 0
    size = m.shape[-1]
    kind, px = rule.split_jitter(split)
    out = ItemPrompt(case=case, slice=slice_, empty=not m.any())
    if out.empty and rule.empty == "skip":
        out.prompted = False
        return out
    if rule.box != "none":
        if out.empty:
            out.box = random_box(size, kind, px, rs).tolist()
        else:
            box = tight_box(m, rule.box, rule.box_end)
            assert box is not None
            out.box = (box if rule.redrawn(split) else jitter_box(box, kind, px, size, rs)).tolist()
    pts, labels = initial_points(m, rule.points, rule.point_rule, rs)
    out.points, out.labels = pts.tolist(), labels.tolist()
    return out


def object_at(labels: torch.Tensor, classes: list[int], size: int) -> torch.Tensor:
    """Label maps (n, S, S) -> the object (union of ``classes``) as (n, size, size) uint8, nearest."""
    obj = torch.isin(labels, torch.tensor(classes, dtype=labels.dtype)).to(torch.uint8)
    if obj.shape[-1] != size:
        obj = F.interpolate(obj[:, None].float(), size=(size, size), mode="nearest")[:, 0].to(torch.uint8)
    return obj


def draw_items(masks: torch.Tensor, keys: list[tuple[str, int | None]], rule: PromptRule, split: str, seed: int) -> list[ItemPrompt]:
    """Prompts of (n, R, R) object masks keyed by (case id, slice), each with its own generator;
    coordinates rounded as stored in a prompt file, so the drawn and the stored prompts are equal."""
    out = []
    for m, (case, sl) in zip(masks, keys):
        item = draw_item(m.numpy(), rule, split, np.random.RandomState(item_seed(seed, case, sl)), case, sl)
        out.append(ItemPrompt.from_json(item.to_json()))
    return out
