"""Assigning cases to train/val/test, grouped by patient/volume, reproducibly.

Every split is a deterministic function of (sorted case ids and groups, labels, the task's split
spec); its hash goes into every result so two results are comparable only if they share it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvmbench.data.cases import Case
from lvmbench.errors import DataError
from lvmbench.spec import SplitSpec

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    train: list[Case]
    val: list[Case]
    test: list[Case]

    def __getitem__(self, name: str) -> list[Case]:
        return getattr(self, name)

    def counts(self) -> dict[str, int]:
        return {s: len(self[s]) for s in SPLITS}

    def manifest(self) -> dict[str, list[str]]:
        return {s: sorted(c.id for c in self[s]) for s in SPLITS}

    def hash(self) -> str:
        blob = json.dumps(self.manifest(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def grouped_split(cases: list[Case], fractions: dict[str, float], seed: int, stratify: bool = True) -> dict[str, list[Case]]:
    """Split whole groups (patients/volumes) into the named parts with the given fractions.

    Groups are stratified by their majority label (when labels exist and ``stratify``): within each
    stratum groups are shuffled with ``seed`` and dealt out by cumulative fraction, so each part gets
    close to its share of every class. Case order does not matter: groups are sorted first.
    """
    by_group: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_group[c.group].append(c)
    groups = sorted(by_group)

    def stratum(g: str) -> int:
        labels = [c.label for c in by_group[g] if c.label is not None]
        if not stratify or not labels:
            return -1
        vals, counts = np.unique(labels, return_counts=True)
        return int(vals[np.argmax(counts)])

    strata: dict[int, list[str]] = defaultdict(list)
    for g in groups:
        strata[stratum(g)].append(g)
    rng = np.random.default_rng(seed)
    names = list(fractions)
    out: dict[str, list[Case]] = {n: [] for n in names}
    # Carry fractional remainders across strata so small classes do not all round into one part.
    carry = np.zeros(len(names))
    for key in sorted(strata):
        gs = list(strata[key])
        rng.shuffle(gs)
        want = np.array([fractions[n] for n in names]) * len(gs) + carry
        take = np.floor(want).astype(int)
        rest = len(gs) - take.sum()
        order = np.argsort(-(want - take), kind="stable")
        for i in order[:rest]:
            take[i] += 1
        carry = want - take
        start = 0
        for n, k in zip(names, take):
            for g in gs[start : start + k]:
                out[n].extend(sorted(by_group[g], key=lambda c: c.id))
            start += k
    return out


def make_split(cases: list[Case], spec: SplitSpec, task_folder: Path | None = None) -> Split:
    if spec.source == "rule":
        parts = grouped_split(cases, {"train": 1 - spec.val - spec.test, "val": spec.val, "test": spec.test}, spec.seed, spec.stratify)
        split = Split(parts["train"], parts["val"], parts["test"])
    elif spec.source == "publisher":
        split = _publisher_split(cases, spec)
    else:
        split = _file_split(cases, spec, task_folder)
    check_disjoint(split)
    for s in ("train", "test"):
        if not split[s]:
            raise DataError(f"the {s} split is empty ({len(cases)} cases in all)", path=task_folder or ".", fix="check the dataset and the task's split spec")
    return split


def _publisher_split(cases: list[Case], spec: SplitSpec) -> Split:
    parts: dict[str, list[Case]] = {s: [] for s in SPLITS}
    for c in cases:
        pub = c.meta.get("split")
        if pub in spec.map:
            parts[spec.map[pub]].append(c)
    if not parts["val"] and spec.val > 0:
        # Validation is carved out of the publisher's training part, by group.
        inner = grouped_split(parts["train"], {"train": 1 - spec.val, "val": spec.val}, spec.seed, spec.stratify)
        parts["train"], parts["val"] = inner["train"], inner["val"]
    return Split(parts["train"], parts["val"], parts["test"])


def _file_split(cases: list[Case], spec: SplitSpec, task_folder: Path | None) -> Split:
    path = Path(spec.file or "")
    if not path.is_absolute() and task_folder is not None:
        path = task_folder / path
    if not path.is_file():
        raise DataError("split file not found", path=path, fix="run `lvmbench data split TASK` or `lvmbench data import-splits`")
    try:
        lists = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"split file is not valid JSON ({e.msg} at line {e.lineno})", path=path, fix="regenerate it") from None
    by_id = {c.id: c for c in cases}
    parts: dict[str, list[Case]] = {}
    for s in SPLITS:
        ids = lists.get(s, [])
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(
                f"{len(missing)} case(s) of the '{s}' list are not in the dataset (e.g. {missing[0]})",
                path=path,
                fix="check --data-root, or regenerate the split for this copy of the data",
            )
        parts[s] = [by_id[i] for i in ids]
    return Split(parts["train"], parts["val"], parts["test"])


def check_disjoint(split: Split) -> None:
    """No case and no patient/volume may sit in two splits."""
    seen_case: dict[str, str] = {}
    seen_group: dict[str, str] = {}
    for s in SPLITS:
        for c in split[s]:
            if c.id in seen_case and seen_case[c.id] != s:
                raise DataError(f"case '{c.id}' is in both {seen_case[c.id]} and {s}", path=c.image, fix="fix the split file")
            if c.group in seen_group and seen_group[c.group] != s:
                raise DataError(
                    f"patient/volume '{c.group}' is in both {seen_group[c.group]} and {s}",
                    path=c.image,
                    fix="split by patient: regenerate the split",
                )
            seen_case[c.id] = s
            seen_group[c.group] = s


def label_subset(cases: list[Case], fraction: float, seed: int) -> list[Case]:
    """Nested, group-wise, class-stratified subset: the 1% subset is inside the 10% one for a seed."""
    if fraction >= 1.0:
        return list(cases)
    by_group: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_group[c.group].append(c)
    strata: dict[int, list[str]] = defaultdict(list)
    for g in sorted(by_group):
        labels = [c.label for c in by_group[g] if c.label is not None]
        strata[int(np.bincount(labels).argmax()) if labels else -1].append(g)
    rng = np.random.default_rng(10_000 + seed)
    keep: list[Case] = []
    for key in sorted(strata):
        gs = list(strata[key])
        rng.shuffle(gs)  # a fixed order per seed; every fraction takes a prefix of it -> nested
        k = max(1, int(round(fraction * len(gs))))
        for g in gs[:k]:
            keep.extend(by_group[g])
    return sorted(keep, key=lambda c: c.id)
