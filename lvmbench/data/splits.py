"""Assigning cases to train/val/test, grouped by patient/volume, reproducibly.

Every split is a deterministic function of (sorted case ids and groups, labels, the task's split
spec); its hash goes into every result so two results are comparable only if they share it.

Split files. A rule split can be frozen (``lvmbench data split``) and a paper's lists imported
(``lvmbench data import-splits``) into a JSON file of case ids. Those lists name the files of
licensed datasets, so they live with the user, not in the repository: in the *splits folder*
(``$LVMBENCH_SPLITS``, default ``$XDG_DATA_HOME/lvmbench/splits`` = ``~/.local/share/lvmbench/splits``),
one file per suite and task, ``<splits folder>/<suite>/<task>.json``. When that file exists it
replaces the task's own split spec for that suite (the run logs where its split came from, and the
split hash in every result changes with it); delete the file to go back to the task's rule. A task
may also name a file itself (``split.source: file``): relative paths are looked up in the task folder
(lists the project may ship) and then in the splits folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lvmbench.data.cases import Case
from lvmbench.errors import DataError
from lvmbench.spec import SplitSpec

SPLITS = ("train", "val", "test")
SPLIT_FORMAT = "lvmbench-split/1"


def splits_dir() -> Path:
    """Where frozen and imported split files live (outside the repository: they list licensed files)."""
    env = os.environ.get("LVMBENCH_SPLITS")
    if env:
        return _folder_or_absent(Path(env), "point LVMBENCH_SPLITS at a folder (it is created when a split is first written), or unset it")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return _folder_or_absent(Path(base) / "lvmbench" / "splits", "move that file away, or set LVMBENCH_SPLITS to a folder")


def _folder_or_absent(path: Path, fix: str) -> Path:
    """A file where the splits folder should be would hide every frozen split (runs would fall
    back to the task's rule without a word) and break every write: refuse it in one line."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"cannot be a folder: {p} is a file"
                raise DataError(f"the splits folder {what}", path=path, fix=fix)
            break
    return path


def frozen_split_path(task_id: str, suite: str) -> Path:
    return splits_dir() / suite / f"{task_id}.json"


@dataclass
class Split:
    train: list[Case]
    val: list[Case]
    test: list[Case]
    # where the lists came from (task rule, a split file) and the flaws a result must carry
    origin: str = "task split spec"
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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


def make_split(cases: list[Case], spec: SplitSpec, task_folder: Path | None = None, override: Path | None = None) -> Split:
    """The task's split; ``override`` (a frozen or imported split file) replaces the spec."""
    if override is not None:
        split = read_split_file(override, cases)
        _require_train_test(split, len(cases), override)
        return split
    if spec.source == "rule":
        parts = grouped_split(cases, {"train": 1 - spec.val - spec.test, "val": spec.val, "test": spec.test}, spec.seed, spec.stratify)
        split = Split(parts["train"], parts["val"], parts["test"])
    elif spec.source == "publisher":
        split = _publisher_split(cases, spec)
    else:
        split = read_split_file(find_split_file(spec.file or "", task_folder), cases)
    if spec.source != "file":
        check_disjoint(split)
    _require_train_test(split, len(cases), task_folder or Path("."))
    return split


def resolve_split(cases: list[Case], spec: SplitSpec, task_id: str, suite: str | None, task_folder: Path | None = None) -> Split:
    """The split a run uses: the user's split file for (suite, task) when there is one, else the spec."""
    override = frozen_split_path(task_id, suite) if suite else None
    return make_split(cases, spec, task_folder, override if override is not None and override.is_file() else None)


def _require_train_test(split: Split, n: int, where: Path) -> None:
    for s in ("train", "test"):
        if not split[s]:
            raise DataError(f"the {s} split is empty ({n} cases in all)", path=where, fix="check the dataset and the task's split spec")


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


def find_split_file(name: str, task_folder: Path | None) -> Path:
    path = Path(name)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = ([task_folder / path] if task_folder is not None else []) + [splits_dir() / path]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"split file '{name}' not found (looked in {', '.join(str(c.parent) for c in candidates)})",
        path=candidates[0],
        fix="run `lvmbench data split TASK` or `lvmbench data import-splits`, or fix split.file in the task",
    )


def read_split_file(path: Path, cases: list[Case]) -> Split:
    """A ``{"train": [ids], "val": [ids], "test": [ids]}`` file (plus lvmbench's metadata) -> Split.

    Overlap between parts is refused unless the file declares it in ``allow_overlap`` (a flawed
    paper split imported on purpose); its ``flags`` then go into every result.
    """
    try:
        lists = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"split file is not valid JSON ({e.msg} at line {e.lineno})", path=path, fix="regenerate it") from None
    except OSError as e:
        raise DataError(f"cannot read the split file ({e.strerror})", path=path, fix="check the file's permissions") from None
    if not isinstance(lists, dict) or not any(isinstance(lists.get(s), list) for s in SPLITS):
        raise DataError("split file has no 'train'/'val'/'test' lists", path=path, fix="regenerate it with `lvmbench data split` or `lvmbench data import-splits`")
    by_id = {c.id: c for c in cases}
    parts: dict[str, list[Case]] = {}
    for s in SPLITS:
        ids = lists.get(s, [])
        refuse_duplicates(s, ids, path)
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(
                f"{len(missing)} case(s) of the '{s}' list are not in the dataset (e.g. {missing[0]})",
                path=path,
                fix="check --data-root, or regenerate the split for this copy of the data",
            )
        parts[s] = [by_id[i] for i in ids]
    allow = {frozenset(p) for p in lists.get("allow_overlap", []) if len(p) == 2}
    origin = str(lists.get("origin") or "split file")
    split = Split(parts["train"], parts["val"], parts["test"], origin=f"{path} ({origin})", flags=[str(f) for f in lists.get("flags", [])])
    check_disjoint(split, allow, where=path)
    used = {c.id for s in SPLITS for c in parts[s]}
    if len(used) < len(by_id):
        split.notes.append(f"{len(by_id) - len(used)} of the dataset's {len(by_id)} cases are in no list of {path.name}")
    return split


def refuse_duplicates(part: str, ids: list[str], where: Path | str) -> None:
    """A case listed twice in one part would be trained on or scored twice."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            n = sum(1 for j in ids if j == i)
            raise DataError(f"case '{i}' is listed {'twice' if n == 2 else f'{n} times'} in the '{part}' list", path=where, fix="remove the duplicate entries from the split file (or regenerate it)")
        seen.add(i)


def dataset_fingerprint(cases: list[Case]) -> dict[str, Any]:
    ids = sorted(c.id for c in cases)
    return {"cases": len(ids), "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]}


def write_split_file(
    path: Path,
    split: Split,
    *,
    task: str,
    suite: str,
    origin: str,
    cases: list[Case],
    allow_overlap: list[tuple[str, str]] = (),
) -> None:
    """Write the split atomically (a concurrent reader sees the old file or the new one)."""
    for s in SPLITS:
        refuse_duplicates(s, [c.id for c in split[s]], path)
    doc: dict[str, Any] = {
        "format": SPLIT_FORMAT,
        "task": task,
        "suite": suite,
        "origin": origin,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset_fingerprint(cases),
        "flags": sorted(split.flags),
        "allow_overlap": [list(p) for p in allow_overlap],
        "split_hash": split.hash(),
        "counts": split.counts(),
    }
    # Lists keep the split's own order (imported lists stay as published; rules are sorted already).
    doc.update({s: [c.id for c in split[s]] for s in SPLITS})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overlaps(parts: dict[str, list[Case]]) -> dict[tuple[str, str], dict[str, list[str]]]:
    """For every pair of parts that share anything: the shared case ids and patient/volume groups."""
    out: dict[tuple[str, str], dict[str, list[str]]] = {}
    names = [s for s in SPLITS if s in parts]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ids = sorted({c.id for c in parts[a]} & {c.id for c in parts[b]})
            groups = sorted({c.group for c in parts[a]} & {c.group for c in parts[b]})
            if ids or groups:
                out[(a, b)] = {"cases": ids, "groups": groups}
    return out


def check_disjoint(split: Split, allow: set[frozenset[str]] = frozenset(), where: Path | str | None = None) -> None:
    """No case and no patient/volume may sit in two splits (except pairs in ``allow``)."""
    for (a, b), shared in overlaps({s: split[s] for s in SPLITS}).items():
        if frozenset((a, b)) in allow:
            continue
        if shared["cases"]:
            cid = shared["cases"][0]
            raise DataError(
                f"case '{cid}' is in both {a} and {b}" + (f" ({len(shared['cases'])} cases overlap)" if len(shared["cases"]) > 1 else ""),
                path=where or next(c.image for c in split[a] if c.id == cid),
                fix="fix the split file",
            )
        g = shared["groups"][0]
        raise DataError(
            f"patient/volume '{g}' is in both {a} and {b}" + (f" ({len(shared['groups'])} groups overlap)" if len(shared["groups"]) > 1 else ""),
            path=where or next(c.image for c in split[a] if c.group == g),
            fix="split by patient: regenerate the split",
        )


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
