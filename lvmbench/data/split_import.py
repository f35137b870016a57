"""Import a paper's published split lists (LVM-Med's ``files_split``) onto our case ids.

LVM-Med publishes, per dataset, ``{"train": [...], "valid": [...], "test": [...]}`` (plus
``*_labels`` lists of mask names) with file names (Kvasir ``<id>.jpg``, BUSI ``benign (12).png``),
MMWHS slice names (``ct_train_1020_image_frame_32.png``, one volume = many frames) or, for FGADR,
``[absolute path, grade]`` pairs. Each entry is matched to a case by file name (then without spaces
and case-insensitively, as LVM-Med strips spaces), or for slice names by the volume they come from.

The result is checked before anything is written: every part must be disjoint from the others by
case and by patient/volume. A list whose ``val`` equals its ``test`` (FGADR's does: the paper chose
checkpoints on its test set) or that overlaps otherwise is refused unless the user accepts it with
``allow_flawed`` (results then carry a ``flawed-split:...`` flag) or, for val == test, asks for a
validation part carved out of train instead (``carve_val``, what LVM-Med's training code does).
The project ships this importer, never the lists themselves.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvmbench.data.cases import Case
from lvmbench.data.splits import SPLITS, Split, grouped_split, overlaps
from lvmbench.errors import DataError

PART_KEYS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}
_FRAME = re.compile(r"^(?P<vol>.+?)_(?:image|label)_frame_\d+(?:\.\w+)?$")


@dataclass
class PaperLists:
    path: Path
    parts: dict[str, list[str]]
    labels: dict[str, int] = field(default_factory=dict)  # file name -> class (FGADR pairs)
    mask_parts: dict[str, list[str]] = field(default_factory=dict)  # the *_labels lists


@dataclass
class ImportResult:
    split: Split
    allow_overlap: list[tuple[str, str]]
    report: list[str]
    origin: str


def load_paper_lists(path: Path) -> PaperLists:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("split list not found", path=path, fix="pass the path of the JSON list (e.g. files_split/Kvasir.json converted to JSON)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"not a readable JSON split list ({e.__class__.__name__})", path=path, fix="convert the list to JSON ({'train': [...], 'valid': [...], 'test': [...]})") from None
    if not isinstance(raw, dict):
        raise DataError("split list is not a JSON object", path=path, fix="expected {'train': [...], 'valid': [...], 'test': [...]}")
    out = PaperLists(Path(path), {})
    for part, keys in PART_KEYS.items():
        key = next((k for k in keys if isinstance(raw.get(k), list)), None)
        if key is None:
            continue
        names: list[str] = []
        for entry in raw[key]:
            name, label = _entry(entry, path)
            names.append(name)
            if label is not None:
                out.labels[name] = label
        out.parts[part] = names
        masks = raw.get(f"{key}_labels")
        if isinstance(masks, list):
            out.mask_parts[part] = [_entry(e, path)[0] for e in masks]
    if "train" not in out.parts or "test" not in out.parts:
        raise DataError(f"split list has no 'train' and 'test' lists (keys: {', '.join(sorted(raw))})", path=path, fix="expected LVM-Med's files_split format")
    return out


def _entry(entry: Any, path: Path) -> tuple[str, int | None]:
    if isinstance(entry, str):
        return Path(entry.replace("\\", "/")).name, None
    if isinstance(entry, list) and entry and isinstance(entry[0], str):
        label = entry[1] if len(entry) > 1 and isinstance(entry[1], int) else None
        return Path(entry[0].replace("\\", "/")).name, label
    raise DataError(f"unexpected list entry {entry!r:.60}", path=path, fix="entries must be file names or [path, label] pairs")


def _norm(name: str) -> str:
    return name.replace(" ", "").lower()


def entry_keys(name: str) -> list[str]:
    """Keys a list entry may match a case by, most specific first."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    keys = [name, stem, _norm(name), _norm(stem)]
    m = _FRAME.match(name)
    if m:  # a slice of a volume: the volume is the case
        vol = m.group("vol")
        keys += [vol, f"{vol}_image", _norm(vol)]
    return keys


def case_keys(case: Case) -> list[str]:
    name = case.image.rsplit("/", 1)[-1]
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else (name.rsplit(".", 1)[0] if "." in name else name)
    keys = [case.id, name, stem, _norm(name), _norm(stem), _norm(case.id)]
    if stem.endswith("_image"):
        keys.append(stem[: -len("_image")])
    return keys


def match_entries(names: list[str], cases: list[Case], duplicates: list[tuple[str, str]] | None = None) -> tuple[list[Case], list[str]]:
    """Cases the names refer to (first-seen order, each once) and the names that match none.

    ``duplicates`` collects (entry, earlier entry) pairs that name one case twice: the same name
    listed again, or two spellings of one file. Frames of one volume (``..._frame_N``) naming
    their volume are not duplicates.
    """
    index: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        for k in dict.fromkeys(case_keys(c)):
            index[k].append(c)
    found: dict[str, Case] = {}
    first: dict[str, str] = {}
    seen: set[str] = set()
    missing: list[str] = []
    for name in names:
        hit = None
        for k in entry_keys(name):
            if len(index.get(k, ())) == 1:  # an ambiguous key (two cases) is no match
                hit = index[k][0]
                break
        if duplicates is not None and (name in seen or (hit is not None and hit.id in first and not (_FRAME.match(name) and _FRAME.match(first[hit.id])))):
            duplicates.append((name, name if name in seen else first[hit.id]))  # type: ignore[union-attr]
        seen.add(name)
        if hit is None:
            missing.append(name)
        else:
            found.setdefault(hit.id, hit)
            first.setdefault(hit.id, name)
    return list(found.values()), missing


def import_lists(
    lists: PaperLists,
    cases: list[Case],
    *,
    allow_flawed: bool = False,
    allow_missing: bool = False,
    carve_val: float | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> ImportResult:
    """Match the lists to ``cases`` and check them; ``log`` sees each report line as it is made
    (so a refused import still shows what was matched and where the overlap is)."""
    report = _Report(log)
    parts: dict[str, list[Case]] = {}
    missing_all: dict[str, list[str]] = {}
    listed = 0
    for part in SPLITS:
        names = lists.parts.get(part, [])
        listed += len(names)
        dups: list[tuple[str, str]] = []
        parts[part], missing_all[part] = match_entries(names, cases, dups)
        if dups:
            name, other = dups[0]
            again = "twice" if name == other else f"twice (as '{other}' and '{name}')"
            raise DataError(
                f"the '{part}' list names '{name}' {again}" + (f"; {len(dups)} duplicate entries in all" if len(dups) > 1 else ""),
                path=lists.path,
                fix="remove the duplicate entries from the list (a case listed twice is trained on or scored twice)",
            )
        msg = f"{part}: {len(names)} listed -> {len(parts[part])} cases"
        if missing_all[part]:
            msg += f", {len(missing_all[part])} not in the dataset (e.g. {missing_all[part][0]})"
        report.append(msg)
    flags: list[str] = []
    n_missing = sum(len(m) for m in missing_all.values())
    if n_missing:
        if not allow_missing:
            part = next(p for p in SPLITS if missing_all[p])
            raise DataError(
                f"{n_missing} of {listed} listed files are not in the dataset (e.g. '{missing_all[part][0]}' of {part})",
                path=lists.path,
                fix="check --data-root, or pass --allow-missing to keep only the listed cases this copy has (results are flagged)",
            )
        flags.append(f"partial-split:{listed - n_missing}/{listed}")
    report.extend(_mask_list_notes(lists, cases, parts))
    report.extend(_label_notes(lists, parts))

    found = overlaps(parts)
    val_is_test = bool(parts["val"]) and {c.id for c in parts["val"]} == {c.id for c in parts["test"]}
    for (a, b), shared in found.items():
        report.append(f"overlap {a}/{b}: {len(shared['cases'])} cases, {len(shared['groups'])} patients/volumes" + (" (val equals test)" if val_is_test and (a, b) == ("val", "test") else ""))
    origin = f"imported from {lists.path.name}"
    allow: list[tuple[str, str]] = []
    if found:
        only_val_test = val_is_test and set(found) == {("val", "test")}
        if carve_val and only_val_test:
            inner = grouped_split(parts["train"], {"train": 1 - carve_val, "val": carve_val}, seed)
            parts["train"], parts["val"] = inner["train"], inner["val"]
            origin += f"; its val list (== test) replaced by {carve_val:g} of train carved with seed {seed}"
            report.append(f"val carved from train: {len(parts['train'])} train / {len(parts['val'])} val")
        elif allow_flawed:
            for a, b in found:
                flags.append("flawed-split:val-equals-test" if val_is_test and (a, b) == ("val", "test") else f"flawed-split:overlap-{a}-{b}")
                allow.append((a, b))
        else:
            (a, b), shared = next(iter(found.items()))
            what = "its val list equals its test list" if val_is_test else f"{a} and {b} share {len(shared['cases'])} cases / {len(shared['groups'])} patients"
            fix = "pass --allow-flawed-split to use it as published (results are flagged)"
            if only_val_test:
                fix = "pass --carve-val 0.2 to carve validation from train (as LVM-Med's code does), or " + fix
            raise DataError(f"refusing a flawed split: {what}", path=lists.path, fix=fix)
    split = Split(parts["train"], parts["val"], parts["test"], origin=origin, flags=sorted(flags))
    if not split.train or not split.test:
        raise DataError("after matching, the train or test list is empty", path=lists.path, fix="check that --task names the dataset these lists are for and --data-root")
    return ImportResult(split, allow, list(report), origin)


class _Report(list):
    def __init__(self, log: Callable[[str], None] | None):
        super().__init__()
        self.log = log

    def append(self, line: str) -> None:
        super().append(line)
        if self.log is not None:
            self.log(line)

    def extend(self, lines) -> None:
        for line in lines:
            self.append(line)


def _mask_list_notes(lists: PaperLists, cases: list[Case], parts: dict[str, list[Case]]) -> list[str]:
    """LVM-Med's ``*_labels`` lists should name the same cases as the image lists."""
    notes = []
    for part, names in lists.mask_parts.items():
        mask_cases, _ = match_entries(names, cases)
        a, b = {c.id for c in mask_cases}, {c.id for c in parts[part]}
        if a != b:
            notes.append(f"note: {part}_labels names {len(a - b)} case(s) not in the {part} image list and misses {len(b - a)}")
    return notes


def _label_notes(lists: PaperLists, parts: dict[str, list[Case]]) -> list[str]:
    if not lists.labels:
        return []
    by_name = {Path(c.image).name: c for p in SPLITS for c in parts[p]}
    wrong = sorted(n for n, lab in lists.labels.items() if n in by_name and by_name[n].label is not None and by_name[n].label != lab)
    if not wrong:
        return [f"labels: all {sum(1 for n in lists.labels if n in by_name)} listed labels agree with the dataset's"]
    return [f"note: {len(wrong)} listed label(s) differ from the dataset's (e.g. {wrong[0]}); the dataset's labels are used"]
