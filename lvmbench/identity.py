"""What a result belongs to: a finished unit is valid only for the split, spec, code and data that
produced it.

A unit's **identity** is recorded in its result (``ResultRecord.identity``) and recomputed by every
``lvmbench eval`` before a finished unit is skipped:

- ``split``: the hash of the train/val/test case lists (a new rule seed, ``data import-splits``);
- ``spec``: the task as run (after the suite's profile) with the unit's protocol settings resolved,
  defaults included, restricted to what can move the numbers (title, notes and reported rows are
  left out; for head protocols, only the unit's own head and its parameters);
- ``eval``: ``EVAL_VERSION``, the protocol's own ``version`` and the decoders' ``PREPROCESS_VERSION``
  (:func:`eval_code`) — bumped when code that can move numbers changes, so results of older code
  are recomputed;
- ``data``: the fingerprint of the task's files (ids and content stamps, lvmbench/runtime.py);
- ``train_subset``: the training cases the unit's label fraction and seed selected;
- ``encoder``: how the encoder turns images into vectors (pooling), when it says;
- ``run``: the run options that change what is computed (``--amp``; ``RunOptions.identity``), only
  when one is on, so results of runs without them keep their identity.

A finished result whose identity differs is **stale**: ``eval`` says which parts changed and
recomputes it (``--keep-stale`` keeps it). The leaderboard pools seeds into one cell only when their
``pool_key`` (every part but the seed-dependent training subset) agrees.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lvmbench.spec import RunUnit, TaskSpec

# Bump when shared evaluation code (splitting, decoding, metrics, selection) changes numbers.
# 2: typed settings (schedules, normalisation, augmentation, selection metric), NaN-safe selection.
EVAL_VERSION = 2

# identity parts shared by every seed of a cell (the training subset is drawn per seed)
POOL_PARTS = ("split", "spec", "eval", "data", "encoder", "run")
OPTIONAL_PARTS = ("run",)

# TaskSpec fields that cannot move a number (documentation, listing, verification counts)
_COSMETIC = {"title", "notes", "reported", "reported_suite", "suites", "profiles", "folder", "default_protocols", "metrics", "modality"}


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def spec_dict(task: TaskSpec, unit: RunUnit, settings: Any) -> dict[str, Any]:
    """The part of the task spec the unit's numbers depend on, settings resolved."""
    spec = task.model_dump(mode="json", exclude=_COSMETIC)
    spec["data"].pop("expected", None)
    spec["data"].pop("source_url", None)
    spec["data"].pop("licence", None)
    spec["split"].pop("note", None)
    # settings may say what of them is identity (prompt settings: a decoder's sha256 but not its path)
    view = getattr(settings, "identity_view", None)
    resolved = view(unit) if callable(view) else settings.model_dump(mode="json")
    if "heads" in resolved:  # another head's parameters do not move this unit's numbers
        resolved["heads"] = [unit.head]
        resolved["head_params"] = {unit.head: resolved.get("head_params", {}).get(unit.head, {})}
    spec["protocols"] = {unit.protocol: resolved}
    return spec


def unit_identity(
    task: TaskSpec,
    unit: RunUnit,
    settings: Any,
    eval_code: str,
    split_hash: str,
    data_fingerprint: str,
    train_subset: str,
    encoder: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, str]:
    ident = {
        "split": split_hash,
        "spec": _sha(spec_dict(task, unit, settings)),
        "eval": eval_code,
        "data": data_fingerprint,
        "train_subset": train_subset,
    }
    if encoder:
        ident["encoder"] = _sha(encoder)
    if run:
        ident["run"] = _sha(run)
    return ident


def eval_code(protocol_version: int, preprocess_version: int) -> str:
    """The ``eval`` identity part: shared evaluation code, the protocol's code, the decoders."""
    return f"{EVAL_VERSION}.{protocol_version}.{preprocess_version}"


def differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Names of the identity parts that differ ('identity' for a result written before identities).
    The training subset follows from the split: it is named only when it changed on its own."""
    if not old:
        return ["identity (written by an older lvmbench)"]
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if "split" in changed and "train_subset" in changed:
        changed.remove("train_subset")
    return changed


def pool_key(identity: dict[str, str]) -> str:
    """Records pool into one leaderboard cell only when this agrees ('' for pre-identity results)."""
    if not identity:
        return ""
    # an optional part counts only where present: pool keys of results without it stay what they were
    return _sha({k: identity.get(k) for k in POOL_PARTS if k in identity or k not in OPTIONAL_PARTS})


def cell_key(record: Any) -> tuple:
    """What one leaderboard cell (one table entry before seeds are pooled) is about."""
    u = record.unit
    return (u.suite, u.encoder, u.weights_sha256, u.task_id, u.protocol_tag, u.label_fraction)


def split_current(records: list[Any]) -> tuple[list[Any], list[list[Any]]]:
    """Per cell, the records whose pool key is that of the newest record (finished last) and,
    separately, each older group whose split/spec/code/data differs: never pooled together.

    Returns (current records, superseded groups); every input record is in exactly one of them.
    """
    by_cell: dict[tuple, dict[str, list[Any]]] = {}
    for r in records:
        by_cell.setdefault(cell_key(r), {}).setdefault(pool_key(r.identity), []).append(r)
    current: list[Any] = []
    superseded: list[list[Any]] = []
    for cell in sorted(by_cell, key=repr):
        groups = by_cell[cell]
        newest = max(groups, key=lambda k: (max(r.finished_at for r in groups[k]), k))
        current += groups[newest]
        superseded += [groups[k] for k in sorted(groups) if k != newest]
    return current, superseded
