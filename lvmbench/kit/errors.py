"""One validation error as one line: which key, what is wrong, the nearest valid name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from lvmbench.registry import suggest


def choice_msg(what: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    """``unknown <what> 'x'; did you mean 'y'?`` (or the valid choices when nothing is close)."""
    hint = suggest(str(value), list(choices))
    return f"unknown {what} '{value}'" + (f"; did you mean '{hint}'?" if hint else f"; valid: {', '.join(choices)}")


@dataclass(frozen=True)
class Problem:
    """The first problem of a validation error, ready to be worded by the caller."""

    kind: str  # "unknown" (a key the model does not have), "missing" or "bad"
    key: str  # dotted location inside the model ('' for the model itself)
    text: str  # what is wrong (pydantic's message, with a suggestion for literal choices)
    shown: str  # " (got 'x')" or ''
    valid: list[str]  # unknown: the valid keys at that level
    hint: str | None  # unknown: the nearest valid key


def first_problem(err: ValidationError, model: type[BaseModel], extra_keys: tuple[str, ...] = (), show_lists: bool = True, prefer: str | None = None) -> Problem:
    """The first problem of ``err`` against ``model``; ``extra_keys`` are keys valid at the top
    level besides the model's fields (a protocol's ``transformer:`` block); ``show_lists``: quote a
    bad list value in the message (long option lists are left out); ``prefer``: the message of the
    problem to report when there are several (a union lists "not a string" for its other branch
    before the problem the user made)."""
    errors = err.errors()
    first = next((x for x in errors if prefer is not None and x["msg"].removeprefix("Value error, ") == prefer), errors[0])
    # function-... and union branch tags (``str``, ``dict[str,str]``) are not keys the user wrote
    loc = tuple(p for p in first.get("loc", ()) if not str(p).startswith("function-") and "[" not in str(p))
    key = ".".join(str(p) for p in loc)
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        parent = model_at(model, loc[:-1])
        valid = sorted(parent.model_fields) if parent is not None else []
        if len(loc) == 1 and valid:
            valid = sorted([*valid, *extra_keys])
        return Problem("unknown", key, "", "", valid, suggest(str(loc[-1]), valid) if valid else None)
    if first["type"] == "missing":
        return Problem("missing", key, first["msg"], "", [], None)
    text = first["msg"].removeprefix("Value error, ")
    if first["type"] == "literal_error" and isinstance(value, str):
        choices = re.findall(r"'([^']*)'", str(first.get("ctx", {}).get("expected", "")))
        hint = suggest(value, choices)
        if hint:
            text += f"; did you mean '{hint}'?"
    hidden = (dict, list) if not show_lists else (dict,)
    shown = "" if isinstance(value, hidden) or value is None else f" (got {value!r})"
    return Problem("bad", key, text, shown, [], None)


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The nested model at ``loc`` of a validation error (for the valid keys of an unknown key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the item's model is the list's
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return current if isinstance(current, type) and issubclass(current, BaseModel) else None
        ann = fields[part].annotation
        current = next((a for a in _flatten(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return current


def _flatten(ann: Any) -> list[Any]:
    args = getattr(ann, "__args__", None)
    if not args:
        return [ann]
    out = []
    for a in args:
        out += _flatten(a)
    return out
