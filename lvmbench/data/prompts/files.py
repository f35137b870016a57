"""Prompt files: the prompts of one task, rule and seed, drawn once and read by every encoder.

They live beside the task's split files (``lvmbench.data.splits``), in the user's splits folder:
``<splits folder>/<suite>/<task>.prompts/<key>-s<seed>.json`` for drawn prompts and
``<key>-imported.json`` for imported ones (used by every seed). ``key`` is the preset's name and a
hash of everything the draw depends on (the resolved rule, the prompted classes, the image size and
resize, the drawing code's version), so two rules never share a file.

Format ``lvmbench-prompts/1``: a header (task, suite, seed, origin, the rule, the grid side
``frame`` the coordinates are in) and ``parts``: ``train`` / ``val`` / ``test`` / ``ood:<name>``,
each a list of items ``{case, slice?, box, points?, labels?, empty?, prompted?}``
(:class:`~lvmbench.data.prompts.items.ItemPrompt`). Drawn files carry no time stamp: the same draw
writes the same bytes, whichever encoder's run writes it.

Identity: a drawn file is a record of a deterministic draw (rule, seed, data and split are already
in a result's identity), so a result names it as ``prompt_source: drawn``; a run redraws, and
rewrites a drawn file whose items differ (data changed, or a hand edit: own prompts are imported,
never edited in). An imported file's sha256 joins the identity of every result that reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lvmbench.data.prompts.items import ItemPrompt
from lvmbench.data.prompts.rules import DRAW_VERSION, PromptRule
from lvmbench.data.splits import splits_dir
from lvmbench.errors import DataError, UserError
from lvmbench.outputs import write_atomic

FORMAT = "lvmbench-prompts/1"


def draw_key(rule: PromptRule, classes: list[int], image_size: int, resize: str) -> str:
    """``<preset>-<hash>``: names the prompt files of one rule (see the module doc)."""
    blob = json.dumps({"rule": rule.model_dump(mode="json"), "classes": list(classes), "image_size": image_size, "resize": resize, "draw": DRAW_VERSION}, sort_keys=True)
    return f"{rule.preset}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def prompts_dir(suite: str, task: str) -> Path:
    return splits_dir() / suite / f"{task}.prompts"


def drawn_path(suite: str, task: str, key: str, seed: int) -> Path:
    return prompts_dir(suite, task) / f"{key}-s{seed}.json"


def imported_path(suite: str, task: str, key: str) -> Path:
    return prompts_dir(suite, task) / f"{key}-imported.json"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prompt_identity(suite: str, task: str, key: str) -> dict[str, Any]:
    """What of the prompts a result's identity holds: an imported file's sha256, else the fact
    that they are drawn (and by which version of the drawing code)."""
    path = imported_path(suite, task, key)
    if path.is_file():
        return {"prompt_source": "imported", "prompt_sha256": sha256_of(path)}
    return {"prompt_source": "drawn", "prompt_draw_version": DRAW_VERSION}


def header(*, task: str, suite: str, seed: int | None, origin: str, key: str, rule: PromptRule, classes: list[int], image_size: int) -> dict[str, Any]:
    return {
        "format": FORMAT, "task": task, "suite": suite, "seed": seed, "origin": origin, "key": key,
        "rule": rule.model_dump(mode="json"), "prompt_classes": list(classes), "image_size": image_size,
        "frame": rule.resolution, "draw_version": DRAW_VERSION,
        "note": f"coordinates in pixels of a {rule.resolution} x {rule.resolution} grid" + ("; train boxes are the base boxes jitter is redrawn around at every use" if rule.redrawn("train") else ""),
    }


def make_doc(head: dict[str, Any], parts: dict[str, list[ItemPrompt]]) -> dict[str, Any]:
    ordered = {p: [it.to_json() for it in sorted(items, key=ItemPrompt.key)] for p, items in sorted(parts.items())}
    return {**head, "parts": ordered}


def read_prompt_file(path: Path) -> dict[str, Any]:
    """A prompt file of this format, or a one-line error naming it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"prompt file is not valid JSON ({e.msg} at line {e.lineno})", path=path, fix="delete it (drawn prompts are redrawn) or re-import it") from None
    except OSError as e:
        raise DataError(f"cannot read the prompt file ({e.strerror})", path=path, fix="check its permissions") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("parts"), dict):
        raise DataError(f"not an lvmbench prompt file (no \"format\": \"{FORMAT}\" with parts)", path=path, fix="import prompts with `lvmbench data prompts TASK --import FILE`")
    return doc


def parts_of(doc: dict[str, Any], path: Path) -> dict[str, list[ItemPrompt]]:
    try:
        return {str(p): [ItemPrompt.from_json(d) for d in items] for p, items in doc["parts"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"malformed prompt item ({e.__class__.__name__}: {e})", path=path, fix="regenerate or re-import the prompt file") from None


def doc_bytes(doc: dict[str, Any]) -> bytes:
    """The bytes a prompt file holds (its sha256 is the file's): the header indented, one line
    per item, so that a file of thousands of slices stays readable and diffable."""
    head = {k: v for k, v in doc.items() if k != "parts"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + [' "parts": {']
    parts = list(doc.get("parts", {}).items())
    for i, (name, items) in enumerate(parts):
        lines.append(f"  {json.dumps(name)}: [")
        lines += [f"   {json.dumps(it, separators=(', ', ': '))}" + ("," if j < len(items) - 1 else "") for j, it in enumerate(items)]
        lines.append("  ]" + ("," if i < len(parts) - 1 else ""))
    lines += [" }", "}"]
    return ("\n".join(lines) + "\n").encode()


def write_prompt_file(path: Path, doc: dict[str, Any]) -> None:
    """Atomically; a file at ``path`` that lvmbench did not write is never replaced."""
    if path.exists():
        try:
            ours = json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UserError("refusing to overwrite a file lvmbench did not write", path=path, fix="move it away, or write elsewhere")
    write_atomic(path, doc_bytes(doc), option="the prompt file")  # a link, FIFO or folder there is refused


def merge_drawn(path: Path, head: dict[str, Any], fresh: dict[str, list[ItemPrompt]]) -> tuple[dict[str, Any], str]:
    """The drawn file with ``fresh`` merged in: items of other cases it holds are kept (a
    label-fraction run draws a subset), items that differ from the fresh draw are replaced.
    Returns the document and what happened (``same``, ``extended``, ``redrawn``, ``new``)."""
    old: dict[str, list[ItemPrompt]] = {}
    state = "new"
    if path.is_file():
        try:
            doc = read_prompt_file(path)
            if all(doc.get(k) == head.get(k) for k in ("key", "seed", "draw_version")):
                old, state = parts_of(doc, path), "same"
        except UserError:
            pass  # unreadable: redrawn
    merged: dict[str, list[ItemPrompt]] = {}
    for part in sorted(set(old) | set(fresh)):
        by_key = {it.key(): it for it in old.get(part, [])}
        for it in fresh.get(part, []):
            have = by_key.get(it.key())
            if have is None:
                state = "extended" if state == "same" else state
            elif have.to_json() != it.to_json():
                state = "redrawn"
            by_key[it.key()] = it
        merged[part] = list(by_key.values())
    return make_doc(head, merged), state
