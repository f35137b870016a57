"""``lvmbench data verify``: is a task's data complete and readable, and will a run accept it?

For each task: the dataset folder, the reader's case list, counts against ``data.expected``, every
file decoded (reader ``check()`` in a thread pool: the decoders release the GIL) plus checks no reader
has to repeat (labels outside the class map, NaN/inf voxels, blank images, empty masks; a task whose
every mask is empty is an error, not a warning: its Dice would be a perfect score of nothing), the
reader's ``dataset_checks()`` (unpaired files, dropped boxes), the split (the user's split file or
the task's rule; overlap by case and patient; ``split.group_by`` against the groups the reader
produces; every class in every split part) and byte-identical images sitting in two split parts
(``lvmbench.data.split_checks``). Every problem is an ``Issue``: the
file, what is wrong, the fix, and whether the task can still run. Paired readers add warnings when
the folders' names lie (a "mask" that looks like a photograph, an "image" holding two values:
``lvmbench.data.content_hints``); table readers add one line per bad row kind (missing image,
unknown label, duplicate id).

``preflight`` runs the same per-case checks before ``lvmbench eval`` uses a dataset, so a run fails
with the very lines verify prints; cases already checked (same files by path, size, mtime and
content stamp, same reader options) are remembered in ``<cache>/verified/`` so later runs only
stat and stamp the files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lvmbench.data.cache import ArrayCache, cache_key, file_stamp
from lvmbench.data.cases import Box, Case, DatasetReader, Issue, issue_from
from lvmbench.data.ood import ood_readers
from lvmbench.data.split_checks import class_coverage_issues, duplicate_fix, duplicate_issues, group_by_issue
from lvmbench.data.splits import resolve_split
from lvmbench.data.task_data import TaskData, dataset_root, limit_cases, task_reader
from lvmbench.errors import DataError, UserError
from lvmbench.spec import TaskSpec

VERIFY_VERSION = 2  # bump when a check is added: remembered "verified" stamps become stale
EMPTY_MASK = "mask has no foreground"


@dataclass
class TaskReport:
    task: str
    root: Path | None
    issues: list[Issue] = field(default_factory=list)
    cases: int = 0
    split_counts: dict[str, int] | None = None
    split_origin: str = ""

    @property
    def fatal(self) -> list[Issue]:
        return [i for i in self.issues if i.fatal]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if not i.fatal]

    @property
    def runnable(self) -> bool:
        return not self.fatal


# -- per-case checks -------------------------------------------------------------------------


class _DecodeOnce:
    """Wraps a reader so ``check()`` and the generic checks share one decode per case and thread.

    Installed as instance attributes on a reader verify created for itself, so nothing else sees it.
    """

    def __init__(self, reader: DatasetReader):
        self.local = threading.local()
        for name in ("load_image", "load_target"):
            setattr(reader, name, self._memo(name, getattr(reader, name)))

    def _memo(self, name: str, fn: Callable[[Case], Any]) -> Callable[[Case], Any]:
        def wrapped(case: Case) -> Any:
            memo = getattr(self.local, name, None)
            if memo is not None and memo[0] is case:
                return memo[1]
            out = fn(case)
            setattr(self.local, name, (case, out))
            return out

        return wrapped


def content_issues(reader: DatasetReader, case: Case, classes: list[str]) -> tuple[list[Issue], str | None]:
    """Checks every reader needs and none should repeat; also the decoded image's digest."""
    img = reader.load_image(case)
    tgt = reader.load_target(case)
    where = str(reader.root / case.image)
    issues: list[Issue] = []
    n = len(classes)
    if np.issubdtype(img.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(img)))
        if bad:
            issues.append(Issue(where, f"{bad} NaN/inf values in the image ({img.size} in all)", "re-export the image/volume (NaNs poison normalisation and training)"))
    if img.size and img.min() == img.max() and not issues:
        issues.append(Issue(where, f"image is blank (every value is {img.flat[0]})", "re-export or remove the file", fatal=False))
    if isinstance(tgt, np.ndarray):
        target = str(reader.root / case.target) if isinstance(case.target, str) else where
        if tgt.size and n and (int(tgt.min()) < 0 or int(tgt.max()) >= n):
            issues.append(Issue(target, f"label values {sorted(set(np.unique(tgt).tolist()) - set(range(n)))[:5]} are outside the task's {n} classes", "fix the mask/label file or the task's classes"))
        elif tgt.size and not tgt.any():
            issues.append(Issue(target, EMPTY_MASK, "expected only for normal/negative cases; otherwise re-export the mask", fatal=False))
    elif isinstance(tgt, list):
        for b in tgt:
            if isinstance(b, Box) and n and not 0 <= b.label < n:
                issues.append(Issue(where, f"box label {b.label} is outside the task's {n} classes", "fix the annotation or the task's classes"))
                break
    elif case.label is not None or tgt is not None:
        label = tgt if tgt is not None else case.label
        if n and not (isinstance(label, (int, np.integer)) and 0 <= int(label) < n):
            issues.append(Issue(where, f"label {label!r} is outside the task's {n} classes", "fix the label or the task's classes"))
    digest = hashlib.blake2b(img.tobytes() + str(img.shape).encode(), digest_size=12).hexdigest()
    return issues, digest


def check_case(reader: DatasetReader, case: Case, classes: list[str]) -> tuple[list[Issue], str | None]:
    try:
        issues = list(reader.check(case))
        if any(i.fatal for i in issues):
            return issues, None  # a broken file: the generic checks would only repeat it
        more, digest = content_issues(reader, case, classes)
        return issues + more, digest
    except UserError as e:
        return [issue_from(e, reader.root / case.image)], None


def check_cases(
    reader: DatasetReader,
    cases: list[Case],
    classes: list[str],
    *,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "verify",
) -> tuple[list[Issue], dict[str, str], set[str], set[str]]:
    """Decode every case (threads): the issues, each readable case's image digest, the ids of the
    cases with a fatal problem and the ids of the readable cases whose mask is empty."""
    _DecodeOnce(reader)
    workers = workers or min(8, os.cpu_count() or 1)
    issues: list[Issue] = []
    digests: dict[str, str] = {}
    broken: set[str] = set()
    empty: set[str] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda c: (c, check_case(reader, c, classes)), cases)
        for case, (found, digest) in tqdm(results, total=len(cases), desc=desc, disable=not progress, leave=False):
            issues.extend(found)
            if any(i.fatal for i in found):
                broken.add(case.id)
            elif any(i.problem == EMPTY_MASK for i in found):
                empty.add(case.id)
            if digest is not None:
                digests[case.id] = digest
    return issues, digests, broken, empty


def all_empty_issue(task_id: str, root: Path, readable: int, empty: int) -> list[Issue]:
    """Every readable mask empty: the masks are not being read (0/1 or class-index files thresholded
    as grey levels, a wrong folder), and Dice would score the empty prediction as perfect."""
    if readable == 0 or empty < readable:
        return []
    return [
        Issue(
            str(root),
            f"every mask of task '{task_id}' is empty ({empty} of {empty} readable cases): nothing to segment",
            "check that the masks folder holds the annotations and data.options.masks/threshold in the task (grey masks are foreground above the threshold; 0/1 and class-index masks are read as labels)",
        )
    ]


# -- dataset-level checks ----------------------------------------------------------------------


def count_issues(spec: TaskSpec, reader: DatasetReader, cases: list[Case], root: Path) -> list[Issue]:
    """``data.expected``: ``cases``, ``groups``, a publisher split name, or a reader's own counts.

    Fewer than expected means files are missing (or were left out as unpaired): the run's numbers
    would not be comparable, so it is fatal. More than expected is a different release: a warning.
    """
    have: dict[str, int] = {"cases": len(cases), "groups": len({c.group for c in cases})}
    for c in cases:
        if c.meta.get("split") is not None:
            key = str(c.meta["split"])
            have[key] = have.get(key, 0) + 1
    extra = getattr(reader, "counts", None)
    if callable(extra):
        have.update(extra(cases))
    issues = []
    for key, want in spec.data.expected.items():
        if key not in have:
            issues.append(Issue(str(spec.folder / "task.yaml" if spec.folder else spec.id), f"data.expected has '{key}', which verify cannot count (known: {', '.join(sorted(have))})", "fix the key in the task", fatal=False))
        elif have[key] < want:
            issues.append(Issue(str(root), f"{have[key]} {key}, expected {want}", "restore the missing files (see the 'left out' lines), or re-download the dataset"))
        elif have[key] > want:
            issues.append(Issue(str(root), f"{have[key]} {key}, expected {want} (a different release?)", "check that this is the release the task describes", fatal=False))
    return issues


# -- whole tasks -------------------------------------------------------------------------------


def verify_task(spec: TaskSpec, data_root: Path | None, suite: str | None = None, *, workers: int | None = None, progress: bool = True,
                cache_dir: Path | None = None) -> TaskReport:
    """Check one task's data. ``cache_dir``: remember the cases that passed there (as ``eval``'s
    pre-run check does), so a later ``eval --cache-dir`` on the same files decodes none again."""
    try:
        root = dataset_root(spec, data_root)
    except DataError as e:
        return TaskReport(spec.id, None, [issue_from(e, spec.data.dir)])
    report = TaskReport(spec.id, root)
    if not root.is_dir():
        report.issues.append(Issue(str(root), "dataset folder not found", f"download the dataset into {root} (layout: tasks/{spec.id}/task.yaml) or fix --data-root"))
        return report
    try:
        reader = task_reader(spec, root)
        cases = limit_cases(reader.cases(), spec.data.limit)
    except UserError as e:
        report.issues.append(issue_from(e, root))
        return report
    report.cases = len(cases)
    report.issues += count_issues(spec, reader, cases, root)
    report.issues += group_by_issue(spec, reader, cases)
    found, digests, broken, empty = check_cases(reader, cases, spec.classes, workers=workers, progress=progress, desc=f"verify {spec.id}")
    report.issues += found
    report.issues += all_empty_issue(spec.id, root, len(cases) - len(broken), len(empty))
    report.issues += _dataset_checks(reader, cases)
    if cache_dir is not None:
        stamps = {c.id: _case_stamp(reader, c, spec.classes) for c in cases if c.id not in broken}
        _VerifiedStore(cache_dir, reader, spec.classes).add(st + (":empty" if cid in empty else "") for cid, st in stamps.items() if st is not None)
    try:
        split = resolve_split(cases, spec.split, spec.id, suite, spec.folder)
        report.split_counts, report.split_origin = split.counts(), split.origin
        report.issues += class_coverage_issues(spec, split)
        report.issues += [Issue(split.origin, f"flawed split: {f}", "results are flagged; re-import without --allow-flawed-split for a clean split", fatal=False) for f in split.flags]
        report.issues += duplicate_issues(split, digests, root, duplicate_fix(spec))
    except UserError as e:
        report.issues.append(issue_from(e, spec.folder or root))
    for name, ood in _ood_or_issue(spec, data_root, report):
        try:
            ood_cases = ood.cases()
        except UserError as e:
            report.issues.append(issue_from(e, ood.root))
            continue
        more, _, broken, empty = check_cases(ood, ood_cases, spec.classes, workers=workers, progress=progress, desc=f"verify {spec.id}:{name}")
        report.issues += more + all_empty_issue(f"{spec.id}:{name}", ood.root, len(ood_cases) - len(broken), len(empty)) + _dataset_checks(ood, ood_cases)
    return report


def _ood_or_issue(spec: TaskSpec, data_root: Path | None, report: TaskReport) -> list[tuple[str, DatasetReader]]:
    try:
        return ood_readers(spec, data_root) if data_root is not None else []
    except UserError as e:
        report.issues.append(issue_from(e, spec.id))
        return []


def _dataset_checks(reader: DatasetReader, cases: list[Case]) -> list[Issue]:
    try:
        return list(reader.dataset_checks(cases))
    except UserError as e:
        return [issue_from(e, reader.root)]


# -- before a run ------------------------------------------------------------------------------


def _case_stamp(reader: DatasetReader, case: Case, classes: list[str]) -> str | None:
    try:
        stamps = [file_stamp(reader.root / f) for f in (case.files or (case.image,))]
    except OSError:
        return None  # a missing file: always re-check (the check names it)
    return cache_key("verified", VERIFY_VERSION, type(reader).__name__, reader.options, classes, case.id, stamps)


def preflight(data: TaskData, cache_dir: Path | None, log: Callable[[str], None] = print, *, workers: int | None = None, progress: bool = False) -> None:
    """Fail before training when verify would call the data unusable; remember what passed.

    Checks the task's cases and its out-of-distribution sets; a case is decoded again only when
    one of its files changed since it last passed.
    """
    spec = data.spec
    for line in data.split.notes:
        log(f"note  {spec.id}: {line}")
    if data.split.origin != "task split spec":
        log(f"note  {spec.id}: split from {data.split.origin}")
    issues = count_issues(spec, data.reader, data.cases, data.root)
    issues += group_by_issue(spec, data.reader, data.cases)
    issues += class_coverage_issues(spec, data.split)
    issues += _check_remembered(data.reader, data.cases, spec.classes, cache_dir, workers, progress, f"check {spec.id}", spec.id)
    for o in data.ood:  # listed when the task's data loaded (an unreadable set failed the load)
        issues += _check_remembered(o.reader, o.cases, spec.classes, cache_dir, workers, progress, f"check {spec.id}:{o.name}", f"{spec.id}:{o.name}")
    fatal = [i for i in issues if i.fatal]
    if not fatal:
        if issues:
            log(f"note  {spec.id}: {len(issues)} data warning(s); see `lvmbench data verify {spec.id}`")
        return
    # Non-fatal lines explain fatal counts (files left out as unpaired), so they are shown too.
    for issue in fatal + [i for i in issues if not i.fatal][:20]:
        log(f"data  {spec.id}: {'' if issue.fatal else 'warning: '}{issue.line()}")
    first = fatal[0]
    more = f"; {len(fatal) - 1} more problem(s) listed above and by `lvmbench data verify {spec.id}`" if len(fatal) > 1 else ""
    raise DataError(first.problem, path=first.path, fix=first.fix + more)


def _check_remembered(reader: DatasetReader, cases: list[Case], classes: list[str], cache_dir: Path | None, workers: int | None, progress: bool, desc: str, name: str = "") -> list[Issue]:
    """``check_cases`` for the cases not remembered as passed. A remembered case with an empty
    mask is stored as ``<stamp>:empty``, so "every mask is empty" is still seen on later runs."""
    store = _VerifiedStore(cache_dir, reader, classes)
    stamps = {c.id: _case_stamp(reader, c, classes) for c in cases}

    def remembered(c: Case) -> str | None:
        st = stamps[c.id]
        if st is None:
            return None
        return "ok" if st in store.keys else ("empty" if f"{st}:empty" in store.keys else None)

    known = {c.id: remembered(c) for c in cases}
    todo = [c for c in cases if known[c.id] is None]
    issues: list[Issue] = []
    broken: set[str] = set()
    empty = {i for i, k in known.items() if k == "empty"}
    if todo:
        # a copy, so the decode-once wrappers never reach the reader the run itself uses
        issues, _, broken, new_empty = check_cases(copy.copy(reader), todo, classes, workers=workers, progress=progress, desc=desc)
        empty |= new_empty
    issues += all_empty_issue(name or desc, reader.root, len(cases) - len(broken), len(empty))
    if todo:
        store.add(stamps[c.id] + (":empty" if c.id in empty else "") for c in todo if stamps[c.id] is not None and c.id not in broken)
    return issues + _dataset_checks(reader, cases)


class _VerifiedStore:
    """Case stamps that passed the checks, one JSON file per (reader, options, root, classes)."""

    def __init__(self, cache_dir: Path | None, reader: DatasetReader, classes: list[str]):
        self.path: Path | None = None
        self.keys: set[str] = set()
        if cache_dir is None:
            return
        name = cache_key("verified-store", type(reader).__name__, reader.options, str(Path(reader.root).resolve()), classes)
        self.path = Path(cache_dir) / "verified" / f"{name[:32]}.json"
        try:
            self.keys = set(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            self.keys = set()

    def add(self, keys: Iterable[str]) -> None:
        new = set(keys) - self.keys
        if self.path is None or not new:
            return
        try:  # merge with what a concurrent run may have added meanwhile
            current = set(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            current = set()
        self.keys |= current | new
        blob = json.dumps(sorted(self.keys)).encode()
        ArrayCache.put_bytes(self.path, blob)
