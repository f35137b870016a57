"""P×K class-balanced batch sampler (metric learning: P classes, K images each per batch).

Per epoch every class's indices are shuffled and cut into groups of K; a class with fewer than K
images is up-sampled with replacement to K. Batches take one group from each of P classes drawn
without replacement among the classes that still have groups, until fewer than P remain (the
official MS-loss ``RandomIdentitySampler`` scheme, re-implemented from its description). The
sequence is a deterministic function of (labels, P, K, seed, epoch); each ``iter`` advances the
epoch unless ``set_epoch`` is called.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[int]]):
    def __init__(self, labels: Sequence[int] | np.ndarray, p: int, k: int, seed: int = 0):
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError("PKBatchSampler needs a non-empty 1-D label array")
        if k < 1 or p < 1:
            raise ValueError(f"P and K must be >= 1 (got P={p}, K={k})")
        self.classes = np.unique(labels)
        self.by_class = [np.flatnonzero(labels == c) for c in self.classes]
        # fewer classes than P: every batch holds all of them
        self.p = min(p, len(self.classes))
        self.k = k
        self.seed = seed
        self.epoch = 0
        self._explicit_epoch = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._explicit_epoch = True

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def _groups(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        groups = []
        for idx in self.by_class:
            idx = rng.permutation(idx)
            if len(idx) < self.k:
                idx = np.concatenate([idx, rng.choice(idx, self.k - len(idx), replace=True)])
            n = len(idx) // self.k
            groups.append([idx[i * self.k : (i + 1) * self.k] for i in range(n)])
        return groups

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        groups = self._groups(rng)
        batches = []
        while True:
            avail = [c for c, g in enumerate(groups) if g]
            if len(avail) < self.p:
                break
            chosen = rng.choice(avail, self.p, replace=False)
            batches.append([int(i) for c in chosen for i in groups[c].pop()])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        if not self._explicit_epoch:
            self.epoch += 1
        self._explicit_epoch = False
        return iter(batches)

    def __len__(self) -> int:
        # exact for the epoch about to be drawn: the count depends on which classes the draw picks
        return len(self._batches(self.epoch))
