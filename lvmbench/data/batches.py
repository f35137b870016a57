"""The minibatches of one training epoch, and what happens to the last partial batch.

Papers differ here: PyTorch's ``DataLoader`` keeps the last partial batch unless told
``drop_last=True``, which many training scripts set. Every protocol that batches takes it as a typed
setting, ``drop_last`` (default ``false``: every training image is seen every epoch; MedMNIST's
BreastMNIST, 546 images at batch 128, is 5 steps of 128, 128, 128, 128, 34). One exception,
whatever ``drop_last`` says: a last batch of a **single** image joins the batch before it (which then
holds ``batch_size + 1``), because BatchNorm in training mode cannot normalise one value per
channel (a pooled feature vector or a 1x1 map raises, larger maps give degenerate statistics) and
one image would also take a full optimiser step alone. ``drop_last: true`` drops the partial batch
unless it is the only one (fewer images than ``batch_size``: one batch of all of them).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def batch_bounds(n: int, batch_size: int, drop_last: bool = False) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch over ``n`` items taken in order (see the module docstring)."""
    if n <= 0:
        return []
    bs = max(1, min(batch_size, n))
    full, rest = divmod(n, bs)
    bounds = [(i * bs, (i + 1) * bs) for i in range(full)]
    if rest and not drop_last:
        if rest == 1:
            bounds[-1] = (bounds[-1][0], n)  # a one-image batch joins the one before
        else:
            bounds.append((full * bs, n))
    return bounds


class ShuffledBatches(Sampler[list[int]]):
    """A batch sampler: a fresh permutation each epoch (``torch.randperm`` on ``generator``, as
    ``DataLoader(shuffle=True, generator=...)`` draws it) cut by :func:`batch_bounds`."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, generator: torch.Generator):
        self.n, self.generator = n, generator
        self.bounds = batch_bounds(n, batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        for a, b in self.bounds:
            yield perm[a:b]
