"""Grouped, stratified, reproducible splits and nested label-fraction subsets."""

from __future__ import annotations

import numpy as np
import pytest

from lvmbench.data.cases import Case
from lvmbench.data.splits import Split, check_disjoint, grouped_split, label_subset, make_split
from lvmbench.errors import DataError
from lvmbench.spec import SplitSpec


def _cases(n_groups=60, per_group=3, k=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_groups):
        label = int(rng.integers(0, k))
        for j in range(int(rng.integers(1, per_group + 1))):
            out.append(Case(id=f"p{g:03d}_{j}", group=f"p{g:03d}", image=f"p{g}_{j}.png", label=label))
    return out


def test_grouped_split_is_disjoint_by_patient_and_stratified():
    cases = _cases()
    split = make_split(cases, SplitSpec(source="rule", val=0.2, test=0.2, seed=3))
    groups = [{c.group for c in split[s]} for s in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(split.counts().values()) == len(cases)
    for s in ("val", "test"):
        labels = {c.label for c in split[s]}
        assert labels == {0, 1, 2}, "every class present in val and test"


def test_split_is_deterministic_and_order_free():
    cases = _cases()
    a = make_split(cases, SplitSpec(seed=1))
    b = make_split(list(reversed(cases)), SplitSpec(seed=1))
    c = make_split(cases, SplitSpec(seed=2))
    assert a.manifest() == b.manifest() and a.hash() == b.hash()
    assert a.hash() != c.hash()


def test_fractions_are_respected():
    cases = [Case(id=str(i), group=str(i), image="x", label=i % 2) for i in range(200)]
    parts = grouped_split(cases, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [120, 40, 40]


def test_overlap_is_refused():
    a = Case(id="a", group="p1", image="a")
    b = Case(id="b", group="p1", image="b")
    with pytest.raises(DataError, match="patient/volume 'p1'"):
        check_disjoint(Split([a], [], [b]))


def test_publisher_split_carves_validation_from_train():
    cases = [Case(id=f"{s}{i}", group=f"{s}{i}", image="x", label=i % 2, meta={"split": s}) for s in ("Training", "Testing") for i in range(20)]
    split = make_split(cases, SplitSpec(source="publisher", map={"Training": "train", "Testing": "test"}, val=0.25, seed=0))
    assert len(split.test) == 20 and len(split.val) == 5 and len(split.train) == 15
    assert all(c.meta["split"] == "Training" for c in split.val)


@pytest.mark.parametrize("seed", [0, 1])
def test_label_subsets_are_nested_grouped_and_stratified(seed):
    cases = _cases(n_groups=200, seed=seed)
    s1 = label_subset(cases, 0.05, seed)
    s10 = label_subset(cases, 0.2, seed)
    full = label_subset(cases, 1.0, seed)
    assert {c.id for c in s1} <= {c.id for c in s10} <= {c.id for c in full}
    assert len(full) == len(cases)
    for sub in (s1, s10):
        groups = {c.group for c in sub}
        assert all(c.group not in groups or c in sub for c in cases if c.group in groups)  # whole patients
        assert {c.label for c in sub} == {0, 1, 2}
