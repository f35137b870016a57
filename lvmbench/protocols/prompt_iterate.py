"""Correction clicks at evaluation (``prompt.iterations: n``): after each prediction one click is
added from the error region (``lvmbench.data.prompts.clicks``, rule ``prompt.click``) and the
decoder predicts again with the first prompt plus every click so far, as SAM-Med2D's and
micro-sam's evaluations do (without feeding the previous mask back). Returns the last prediction
and the mean per-item Dice after each round (round 0 = the first prompt alone): the curve the
result keeps in ``extra.iteration_dice``.

Training (:func:`training_clicks`): with ``iterations`` > 0 the decoder also learns what a click
means: every training batch adds c clicks (c uniform in 0..iterations, the same for the batch),
each an object pixel (positive) or a background pixel (negative) with even odds, drawn from the
ground truth with the unit's generator. Drawing them from the ground truth rather than from the
current errors costs no extra forward pass; the evaluation's clicks come from the errors.

Clicks are drawn on the mask grid and given at the rule's grid (x frame / grid). ``error-uniform``
draws from a generator seeded by (unit seed, case, slice, round), so a run is reproducible and two
runs differ only where their predictions differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lvmbench.data.prompts.clicks import correction_click
from lvmbench.data.prompts.draw import item_seed
from lvmbench.metrics.segmentation import per_sample_overlap
from lvmbench.protocols.prompt_scores import PromptSet


def item_dice(logits: torch.Tensor, ps: PromptSet) -> np.ndarray:
    if not len(logits):
        return np.zeros(0)
    d, _ = per_sample_overlap((logits > 0).long(), ps.targets.long(), 2)
    return d[:, 1]


def next_clicks(logits: torch.Tensor, ps: PromptSet, rule: Any, seed: int, round_: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per item: (n, 1, 2) xy at the rule's grid and (n, 1) labels."""
    scale = 1.0 / ps.grid_scale()
    pts, labels = [], []
    for j in range(len(ps.owner)):
        case = ps.prep.cases[ps.owner[j]].id
        rs = np.random.RandomState(item_seed(seed, f"{case}\x1fclick{round_}", ps.slice_of[j])) if rule.click == "error-uniform" else None
        x, y, lab = correction_click((logits[j] > 0).numpy(), ps.targets[j].numpy(), rule.click, rs)
        pts.append([x * scale, y * scale])
        labels.append(lab)
    return torch.tensor(pts, dtype=torch.float32).reshape(-1, 1, 2), torch.tensor(labels, dtype=torch.int64).reshape(-1, 1)


def iterate(predict, ps: PromptSet, rule: Any, seed: int) -> tuple[torch.Tensor, list[float]]:
    """``predict(points, labels)`` -> logits (None, None: the set's own prompts)."""
    logits = predict(None, None)
    curve = [float(np.mean(item_dice(logits, ps))) if len(ps.owner) else float("nan")]
    if not rule.iterations or not len(ps.owner):
        return logits, curve
    k = 0 if ps.points is None else ps.points.shape[1]
    pts = ps.points if ps.points is not None else torch.zeros(len(ps.owner), 0, 2)
    labels = ps.labels if ps.labels is not None else torch.zeros(len(ps.owner), 0, dtype=torch.int64)
    assert pts.shape[1] == k
    for r in range(rule.iterations):
        p, lab = next_clicks(logits, ps, rule, seed, r)
        pts, labels = torch.cat([pts, p], 1), torch.cat([labels, lab], 1)
        logits = predict(pts, labels)
        curve.append(float(np.mean(item_dice(logits, ps))))
    return logits, curve


def training_clicks(targets: torch.Tensor, n_max: int, scale: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, c, 2) clicks at the rule's grid (mask-grid pixel x ``scale``) and (B, c) labels, c
    uniform in 0..n_max; see the module doc."""
    b, m = targets.shape[0], targets.shape[-1]
    c = int(torch.randint(0, n_max + 1, (1,), generator=gen))
    if c == 0 or b == 0:
        return torch.zeros(b, 0, 2), torch.zeros(b, 0, dtype=torch.int64)
    flat = targets.reshape(b, -1).float()
    positive = torch.rand(b, c, generator=gen) < 0.5
    has_fg, has_bg = flat.sum(1) > 0, flat.sum(1) < m * m
    positive = (positive & has_fg[:, None]) | ~has_bg[:, None]  # an empty (full) target can only be clicked off (on)
    fg_idx = torch.multinomial(flat + (~has_fg[:, None]).float(), c, replacement=True, generator=gen)
    bg_idx = torch.multinomial((1 - flat) + (~has_bg[:, None]).float(), c, replacement=True, generator=gen)
    idx = torch.where(positive, fg_idx, bg_idx)
    pts = torch.stack([idx % m, torch.div(idx, m, rounding_mode="floor")], -1).float() * scale
    return pts, positive.long()
