"""Typed reader options: every key a task.yaml may set under ``data.options``, per reader.

Each reader class declares ``Options`` (a pydantic model: type, default, one-line doc per key) and an
``example``. A task's options, overlaid on the reader's preset defaults, are validated when the task
loads (:func:`validate_options`), so a misspelt key (``mask:`` for ``masks:``) is an error naming the
task file, the key and the nearest valid key instead of an option silently ignored. ``lvmbench
readers`` prints the models (:func:`readers_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lvmbench.data.contained import LINK_FIX, OUTSIDE
from lvmbench.errors import UserError
from lvmbench.kit import Bool, Float, Int, Str, StrOrList, first_problem  # noqa: F401 (readers take their scalars from here)

if TYPE_CHECKING:
    from lvmbench.data.cases import DatasetReader


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
    p = first_problem(err, model, show_lists=False, prefer=OUTSIDE)
    full = f"{where}.{p.key}" if p.key else where
    who = f"task '{task_id}': " if task_id else ""
    see = f"see `lvmbench readers {reader}`"
    if p.kind == "unknown":
        msg = f"{who}unknown data option '{full}' for reader '{reader}'" + (f"; did you mean '{p.hint}'?" if p.hint else "")
        return UserError(msg, path=path, fix=(f"valid keys: {', '.join(p.valid)} ({see})" if p.valid else see))
    if p.kind == "missing":
        return UserError(f"{who}reader '{reader}' needs '{full}'", path=path, fix=f"set it in the task ({see})")
    fix = LINK_FIX if p.text == OUTSIDE else f"correct it in task.yaml ({see})"
    return UserError(f"{who}bad data option '{full}' for reader '{reader}': {p.text}{p.shown}", path=path, fix=fix)
