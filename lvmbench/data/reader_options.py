"""Typed reader options: every key a task.yaml may set under ``data.options``, per reader.

Each reader class declares ``Options`` (a pydantic model: type, default, one-line doc per key) and an
``example``. A task's options, overlaid on the reader's preset defaults, are validated when the task
loads (:func:`validate_options`), so a misspelt key (``mask:`` for ``masks:``) is an error naming the
task file, the key and the nearest valid key instead of an option silently ignored. ``lvmbench
readers`` prints the models (:func:`readers_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr, ValidationError

from lvmbench.data.contained import LINK_FIX, OUTSIDE
from lvmbench.errors import UserError
from lvmbench.protocols.settings import model_at
from lvmbench.registry import suggest

if TYPE_CHECKING:
    from lvmbench.data.cases import DatasetReader

# Strict scalars, as in protocol settings: text is not a number, a number is not text.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Bool = StrictBool
Str = StrictStr
StrOrList = StrictStr | list[StrictStr]


class ReaderOptions(BaseModel):
    """Base of every reader's options model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AnyOptions(ReaderOptions):
    """A reader that declares no options model (an older plugin): anything goes, unchecked."""

    model_config = ConfigDict(extra="allow", frozen=True)


def options_model(cls: type["DatasetReader"]) -> type[ReaderOptions]:
    return getattr(cls, "Options", None) or AnyOptions


def validate_options(
    reader: str,
    cls: type["DatasetReader"],
    options: dict[str, Any],
    *,
    where: str = "data.options",
    task_id: str | None = None,
    path: str | Path | None = None,
) -> ReaderOptions:
    """The reader's options (its preset defaults overlaid by ``options``) as its typed model; any
    problem is one line naming the task, the key and the nearest valid key."""
    model = options_model(cls)
    merged = {**getattr(cls, "defaults", {}), **(options or {})}
    try:
        return model.model_validate(merged)
    except ValidationError as e:
        raise options_error(e, model, reader, where, task_id, path) from None


def options_error(err: ValidationError, model: type[BaseModel], reader: str, where: str, task_id: str | None, path: Any) -> UserError:
    errors = err.errors()
    # a path leading out of the dataset folder is the error to report, even when a union (a path or
    # a mapping of paths) lists "not a string" for its other branch first
    first = next((x for x in errors if x["msg"].removeprefix("Value error, ") == OUTSIDE), errors[0])
    loc = tuple(p for p in first.get("loc", ()) if not str(p).startswith("function-") and "[" not in str(p))  # union branch tags
    key = ".".join(str(p) for p in loc)
    full = f"{where}.{key}" if key else where
    who = f"task '{task_id}': " if task_id else ""
    see = f"see `lvmbench readers {reader}`"
    if first["type"] == "extra_forbidden":
        parent = model_at(model, loc[:-1])
        valid = sorted(parent.model_fields) if parent is not None else []
        hint = suggest(str(loc[-1]), valid) if valid else None
        msg = f"{who}unknown data option '{full}' for reader '{reader}'" + (f"; did you mean '{hint}'?" if hint else "")
        return UserError(msg, path=path, fix=(f"valid keys: {', '.join(valid)} ({see})" if valid else see))
    if first["type"] == "missing":
        return UserError(f"{who}reader '{reader}' needs '{full}'", path=path, fix=f"set it in the task ({see})")
    text = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    fix = LINK_FIX if text == OUTSIDE else f"correct it in task.yaml ({see})"
    return UserError(f"{who}bad data option '{full}' for reader '{reader}': {text}{shown}", path=path, fix=fix)


def validate_task_readers(spec: Any) -> None:
    """The reader options of a task, of each suite profile and of each out-of-distribution set
    validate (called when a task loads)."""
    from lvmbench.data.cases import READERS

    path = (spec.folder / "task.yaml") if spec.folder else None

    def check(reader: str, options: dict[str, Any], where: str) -> None:
        try:
            cls = READERS.get(reader)
        except UserError as e:
            raise UserError(f"task '{spec.id}': {where}: {e}", path=path, fix="use a registered reader (see `lvmbench readers`)") from None
        validate_options(reader, cls, _with_classes(cls, options, spec.classes), where=f"{where}.options" if not where.endswith("options") else where, task_id=spec.id, path=path)

    variants = [("", spec)] + [(f"profiles.{s}.", spec.for_suite(s)) for s in spec.profiles]
    for prefix, s in variants:
        check(s.data.reader, s.data.options, f"{prefix}data.options")
        for i, o in enumerate(s.ood):
            same = o.reader is None or o.reader == s.data.reader
            options = {**(s.data.options if same else {}), **o.options}
            if o.sites:
                options["sites"] = list(o.sites)
            check(o.reader or s.data.reader, options, f"{prefix}ood[{i}] ({o.name}).options")


def _with_classes(cls: type, options: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    fields = getattr(options_model(cls), "model_fields", {})
    if "classes" in fields and "classes" not in options:
        return {**options, "classes": list(classes)}
    return options
