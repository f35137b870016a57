"""``--exclude-test-of SUITE``: pretraining data that is clean by construction.

Every image of the pretraining set that is a test image of one of the suite's tasks (its test split,
and every out-of-distribution test set) is dropped before training, by the rules the leakage audit
(``lvmbench.audit``) uses, so ``lvmbench audit`` on the resulting ``pretrain.json`` finds nothing:

- **name**: a file whose shortest identifying path suffix (``audit.identifying_suffix``, extension
  ignored) is that of a test file;
- **content**: a file whose sha256 is that of a test file (copies under other names);
- **pixels**, for images stored as rows of an array file (MedMNIST ``.npz``, where one file holds the
  train, validation and test images): a row whose uint8 pixels equal a test case's pixels.

Which suites by default (``exclude_test_of`` None): every built-in suite whose data root holds a
``--data`` folder, or lies inside one: ``shared-data`` when the images come from
``../shared/data``, ``lvmmed`` when they come from ``$LVMBENCH_DATA``, ``smoke`` from the synthetic
copy. Pretraining on data outside every suite's root excludes nothing unless asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvmbench.audit import identifying_suffix, sha256_file, suffix_key
from lvmbench.data.ood import ood_readers
from lvmbench.data.task_data import load_task_data
from lvmbench.errors import UserError
from lvmbench.pretrain.data import ARRAY_EXT, Item, npz_arrays
from lvmbench.suites import SUITES, get_suite, suite_data_root
from lvmbench.tasks import all_tasks, tasks_in_suite


def pixel_hash(arr: np.ndarray) -> str:
    """sha256 of a uint8 image as H×W×C (a 2-D image gains its channel axis) and its shape."""
    a = np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr, dtype=np.uint8)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def _is_array_file(name: str) -> bool:
    return name.lower().endswith(ARRAY_EXT)


@dataclass
class TestIndex:
    """The test images of one suite: by identifying name, file sha256, and (array rows) pixels."""

    suite: str
    root: str | None
    names: dict[tuple[str, ...], str] = field(default_factory=dict)  # suffix -> "task:case"
    hashes: dict[str, str] = field(default_factory=dict)
    pixels: dict[str, str] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def add(self, task: str, root: Path, reader, cases, test) -> None:
        files = sorted({f for c in cases for f in (c.files or (c.image,))})
        ident = identifying_suffix(files)
        for c in test:
            label = f"{task}:{c.id}"
            for f in c.files or (c.image,):
                if _is_array_file(f):  # one file holds every split: match the case's own pixels
                    self.pixels.setdefault(pixel_hash(reader.load_image(c)), label)
                    continue
                if f in ident:
                    self.names.setdefault(ident[f], label)
                try:
                    self.hashes.setdefault(sha256_file(root / f), label)
                except OSError:
                    pass  # a missing test file cannot be in the pretraining data by content


def build_test_index(suite: str, data_root: Path | None, log: Callable[[str], None] = print) -> TestIndex:
    """Test cases of every task of ``suite`` (profile applied) found under its data root."""
    get_suite(suite)  # an unknown name fails here, with a suggestion
    root = suite_data_root(suite, data_root, generate=False)
    index = TestIndex(suite, str(root) if root else None)
    specs = [t.for_suite(suite) for t in (tasks_in_suite(suite) if suite != "lvmmed" else [t for t in all_tasks() if t.in_suite("lvmmed")])]
    for spec in specs:
        try:
            data = load_task_data(spec, root, suite=suite)
            index.add(spec.id, data.root, data.reader, data.cases, data.split.test)
            for name, reader in ood_readers(spec, root) if root else []:
                ood_cases = reader.cases()
                index.add(f"{spec.id}:{name}", reader.root, reader, ood_cases, ood_cases)
        except UserError as e:
            index.skipped.append({"task": spec.id, "reason": str(e).splitlines()[0]})
            continue
        index.tasks.append(spec.id)
    if index.skipped:
        log(f"note: --exclude-test-of {suite}: {len(index.skipped)} task(s) without data here, their test images cannot be excluded: {', '.join(s['task'] for s in index.skipped)}")
    return index


def default_suites(sources: Sequence[str]) -> list[str]:
    """Built-in suites whose data root holds a --data folder or lies inside one (see the module doc)."""
    out = []
    folders = [Path(s).resolve() for s in sources if Path(s).is_dir()]
    for name in SUITES:
        try:
            root = suite_data_root(name, None, generate=False)
        except UserError:
            continue
        if root is None or not root.is_dir():
            continue
        root = root.resolve()
        if any(f.is_relative_to(root) or root.is_relative_to(f) for f in folders):
            out.append(name)
    return out


@dataclass
class Exclusion:
    suites: list[str]
    kept: list[Item]
    dropped: list[dict]  # {"path", "member"?, "frames", "match", "test": "task:case"}
    tasks: dict[str, list[str]]
    skipped: dict[str, list[dict]]

    def summary(self) -> dict:
        """What pretrain.json records."""
        images = sum(d["frames"] for d in self.dropped)
        by_match: dict[str, int] = {}
        for d in self.dropped:
            by_match[d["match"]] = by_match.get(d["match"], 0) + d["frames"]
        return {"suites": self.suites, "tasks": self.tasks, "skipped": self.skipped, "dropped_images": images, "by_match": by_match, "dropped": self.dropped}


def _content_hash(it: Item) -> str:
    if it.member is None:
        return sha256_file(Path(it.path))
    with open(it.path, "rb") as f:  # a tar shard member: its bytes, as the manifest hashes them
        f.seek(it.offset)
        return hashlib.sha256(f.read(it.size)).hexdigest()


def _match(it: Item, indexes: list[TestIndex], hashes: dict[str, str], arrays: dict[tuple[str, str], np.ndarray]) -> tuple[str, str] | None:
    """("name" | "content" | "pixels", "task:case") of the test image ``it`` is, or None."""
    if it.kind == "npz":
        key = (it.path, it.member or "")
        if key not in arrays:
            arrays.clear()  # rows come grouped by array (scan order): keep one array in memory
            arrays[key] = npz_arrays(it.path)[it.member or ""]
        ph = pixel_hash(arrays[key][it.frame])
        return next((("pixels", ix.pixels[ph]) for ix in indexes if ph in ix.pixels), None)
    name = it.path if it.member is None else f"{it.path}::{it.member}"
    for ix in indexes:
        for k in sorted({len(key) for key in ix.names}):
            sk = suffix_key(name, k)
            if sk is not None and sk in ix.names:
                return "name", ix.names[sk]
    if not any(ix.hashes for ix in indexes):
        return None
    if name not in hashes:
        hashes[name] = _content_hash(it)
    return next((("content", ix.hashes[hashes[name]]) for ix in indexes if hashes[name] in ix.hashes), None)


def exclude_test_images(items: list[Item], suites: Sequence[str], data_root: Path | None = None, hashes: dict[str, str] | None = None, log: Callable[[str], None] = print) -> Exclusion:
    """Drop every item that is a test image of ``suites``; ``hashes`` ("path" or "path::member" ->
    sha256, from the data manifest) spares hashing files twice."""
    indexes = [build_test_index(s, data_root, log) for s in suites]
    known = dict(hashes or {})
    arrays: dict[tuple[str, str], np.ndarray] = {}
    dropped: dict[tuple[str, str | None], dict] = {}
    kept: list[Item] = []
    for it in items:
        hit = _match(it, indexes, known, arrays)
        if hit is None:
            kept.append(it)
            continue
        d = dropped.setdefault((it.path, it.member), {"path": it.path, **({"member": it.member} if it.member else {}), "frames": 0, "match": hit[0], "test": hit[1]})
        d["frames"] += 1
    return Exclusion(
        list(suites), kept, list(dropped.values()),
        {ix.suite: ix.tasks for ix in indexes}, {ix.suite: ix.skipped for ix in indexes if ix.skipped},
    )


def filter_manifest(manifest: list[dict], kept: list[Item]) -> list[dict]:
    """The manifest of the kept items: entries left with no image go, partly dropped array
    entries say how many rows remain (``samples``) and how many were dropped."""
    count: dict[tuple[str, str | None], int] = {}
    for it in kept:
        key = (it.path, it.member if it.kind in ("npz", "tar") else None)
        count[key] = count.get(key, 0) + 1
    out = []
    for e in manifest:
        n = count.get((e["path"], e.get("member")), 0)
        if n == 0:
            continue
        if n != e.get("samples", n):
            e = {**e, "samples": n, "rows_dropped": e["samples"] - n}
        out.append(e)
    return out


def resolve_suites(requested: list[str] | None, sources: Sequence[str]) -> list[str]:
    """``--exclude-test-of`` as given ([] = none), else the default rule."""
    if requested is None:
        return default_suites(sources)
    for name in requested:
        get_suite(name)  # unknown: one line with a suggestion
    return list(dict.fromkeys(requested))
