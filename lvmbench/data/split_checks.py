"""Checks of a task's split that verify and the pre-run check share: ``split.group_by`` against the
groups the reader produces (any name its group source declares), every class in every split part,
and byte-identical images in two parts (with a fix in options the task's reader has)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from lvmbench.data.cases import READERS, Case, DatasetReader, Issue
from lvmbench.data.reader_options import options_model
from lvmbench.data.readers.groups import reader_group_names
from lvmbench.data.splits import SPLITS, Split
from lvmbench.spec import TaskSpec


def group_by_issue(spec: TaskSpec, reader: DatasetReader, cases: list[Case]) -> list[Issue]:
    """``split.group_by`` must be what the reader's groups are: a split declared patient-grouped
    over cases that each form their own group puts one patient's images in train and test."""
    want = spec.split.group_by
    if want == "case" or len(cases) < 2 or want == getattr(reader, "case_unit", "image"):
        return []
    where = str(spec.folder / "task.yaml") if spec.folder else spec.id
    declared = reader_group_names(reader)
    if want not in ("patient", "volume", "site") and want not in declared:
        named = f"declares {', '.join(repr(d) for d in sorted(declared))}" if declared else "declares no name"
        return [Issue(
            where,
            f"task '{spec.id}': split.group_by is '{want}' but the reader's group source (data.options.group) {named}",
            f"add name: {want} to data.options.group (what its groups are), or set split.group_by to " + (" or ".join(sorted(declared)) if declared else "patient or case"),
        )]
    if want == "site":
        bad = next((c for c in cases if c.meta.get("site") is None or c.group != str(c.meta["site"])), None)
        if bad is None:
            return []
        return [Issue(where, f"task '{spec.id}': split.group_by is 'site' but the reader's groups are not sites (case '{bad.id}' is in group '{bad.group}')", "set data.options.group: '{site}' in the task, or set split.group_by to what the reader groups by")]
    if len({c.group for c in cases}) < len(cases):
        return []
    return [
        Issue(
            where,
            f"task '{spec.id}': split.group_by is '{want}' but the reader gives each of the {len(cases)} cases its own group (it has no {want} information), so one {want}'s images can sit in train and test",
            f"set data.options.group to a template naming the {want} (e.g. '{{{want}}}' from a named group of data.options.pattern), or set split.group_by: case if each case is its own {want}",
        )
    ]


def class_coverage_issues(spec: TaskSpec, split: Split) -> list[Issue]:
    """Classification: every class of the task has a case in every non-empty split part. A class
    with none at all (a legend row read as a label, a typo in ``classes``) or none in train is an
    error (it would be predicted never and still count in macro averages); one missing from val or
    test only is a warning (small datasets; selection or scoring then ignores it)."""
    if spec.family != "classification":
        return []
    where = str(spec.folder / "task.yaml") if spec.folder else spec.id
    counts = {s: Counter(c.label for c in split[s]) for s in SPLITS if split[s]}
    phantom = [k for k in range(spec.num_classes) if not any(n[k] for n in counts.values())]
    issues = []
    if phantom:
        names = ", ".join(repr(spec.classes[k]) for k in phantom)
        issues.append(Issue(where, f"task '{spec.id}': class(es) {names} have no case in any split part", "remove them from the task's classes, or map the labels that mean them with data.options.label_map (rows that are no data: data.options.skip_labels)"))
    for part in ("train", "val", "test"):
        gaps = [repr(spec.classes[k]) for k in range(spec.num_classes) if part in counts and k not in phantom and not counts[part][k]]
        if not gaps:
            continue
        why = "it cannot be learnt" if part == "train" else ("validation cannot select for it" if part == "val" else "its test scores are missing from the result")
        issues.append(Issue(where, f"task '{spec.id}': no case of class {', '.join(gaps)} in the {part} part ({why})",
                            "keep split.stratify: true (a rule split then deals every class with at least 3 groups to each part), give the class more cases, or merge it into another with data.options.label_map",
                            fatal=part == "train"))
    return issues


def duplicate_fix(spec: TaskSpec) -> str:
    """What removes the leak, in options this task's reader has."""
    fields = getattr(options_model(READERS.get(spec.data.reader)), "model_fields", {})
    if "group_identical" in fields:
        how = "set data.options.group_identical: pixels (copies then share a group and one split part)"
    elif "group" in fields:
        how = "put the copies in one group with data.options.group (e.g. a mapping file {file: copies.csv, key: ..., value: ...})"
    else:
        how = f"remove the copies from the dataset folder (reader '{spec.data.reader}' has no grouping option)"
    if spec.split.source == "publisher":
        return f"leakage in the publisher's split (published numbers share it; keep it to compare with them); to avoid it: {how}, with split.source: rule"
    return f"leakage: {how}"


def duplicate_issues(split: Split, digests: dict[str, str], root: Path, fix: str = "leakage: drop the duplicates") -> list[Issue]:
    """Byte-identical decoded images in two different split parts: the same image is scored twice."""
    where: dict[str, list[tuple[str, Case]]] = defaultdict(list)
    for s in SPLITS:
        for c in split[s]:
            if c.id in digests:
                where[digests[c.id]].append((s, c))
    issues = []
    for hits in where.values():
        parts = {s for s, _ in hits}
        if len(parts) > 1:
            (s0, c0), others = hits[0], hits[1:]
            names = ", ".join(f"{c.id} ({s})" for s, c in others[:3])
            issues.append(Issue(str(root / c0.image), f"identical image in {s0} and in {names}", fix, fatal=False))
    return issues
