"""What a task's data is, as two short hashes in every result's identity.

- :func:`data_fingerprint`: every case's id and, per file, its path relative to the dataset folder,
  size and content stamp, plus the reader and its options — of the task's own cases and of each
  out-of-distribution test set (an edited OOD label file changes the OOD metrics, so it must change
  the identity too). Which part of the split a case is in is the split hash's business.
- :func:`train_subset_hash`: the training cases a unit's label fraction and seed select.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lvmbench.data.cache import content_stamp
from lvmbench.data.cases import Case, DatasetReader
from lvmbench.data.splits import label_subset
from lvmbench.data.task_data import TaskData
from lvmbench.spec import RunUnit


def _hash_cases(h: Any, reader: DatasetReader, root: Path, cases: dict[str, Case]) -> None:
    """The content stamp (``lvmbench.data.cache.content_stamp``: size + first and last 64 KiB) sees a
    file edited in place with its size and mtime restored; it costs one small read per file, once
    per process. Modification times and absolute paths are left out: copies change them, and the
    same data elsewhere should give the same fingerprint."""
    h.update(json.dumps([type(reader).__name__, reader.options], sort_keys=True, default=str).encode())
    for cid in sorted(cases):
        files = []
        for f in cases[cid].files or (cases[cid].image,):
            try:
                st = (root / f).stat()
                files.append([f, st.st_size, content_stamp(root / f, st)])
            except OSError:
                files.append([f, -1, ""])
        h.update(json.dumps([cid, files]).encode())


def data_fingerprint(data: TaskData) -> str:
    """sha256 (16 hex) of the task's cases and files, and of every out-of-distribution set's."""
    h = hashlib.sha256()
    _hash_cases(h, data.reader, data.root, {c.id: c for name in ("train", "val", "test") for c in data.split[name]})
    for o in data.ood:  # absent for tasks without OOD sets: their fingerprints are what they were
        h.update(json.dumps(["ood", o.name]).encode())
        _hash_cases(h, o.reader, o.reader.root, {c.id: c for c in o.cases})
    return h.hexdigest()[:16]


def train_subset_hash(data: TaskData, unit: RunUnit) -> str:
    """sha256 (16 hex) of the training case ids the unit's label fraction and seed select."""
    ids = sorted(c.id for c in label_subset(data.split.train, unit.label_fraction, unit.seed))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
