"""``lvmbench protocols``: each protocol's settings model as a table (key, type, default, doc)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from tabulate import tabulate


def type_name(annotation: Any) -> str:
    """A readable type: ``Annotated[int, Strict(), Gt(gt=0)]`` -> ``int > 0``."""
    text = str(annotation)
    text = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", text)
    text = re.sub(r"typing\.|lvmbench\.protocols\.settings\.", "", text)
    text = re.sub(r"Annotated\[(\w+), Strict\(strict=True\)(?:, FieldInfo\(annotation=NoneType, required=True, metadata=\[([^\]]*)\]\))?\]", _bounds, text)
    text = text.replace("NoneType", "None").replace("Schedule", "schedule").replace("MeanStd", "MEANSTD")
    text = re.sub(r"Literal\[([^\]]*)\]", lambda m: m.group(1).replace("'", "").replace(", ", " / "), text)
    while True:  # Union[a, b] / Optional[a] -> a or b
        new = re.sub(r"(?:Union|Optional)\[([^\[\]]*)\]", lambda m: m.group(1).replace(", ", " or ") + (" or None" if m.group(0).startswith("Optional") else ""), text)
        if new == text:
            break
        text = new
    return text.replace(" | ", " or ").replace("MEANSTD", "{mean: [...], std: [...]}")


def _bounds(m: re.Match) -> str:
    base, meta = m.group(1), m.group(2) or ""
    parts = []
    for op, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        hit = re.search(rf"\b{op}=([\d.e-]+)", meta)
        if hit:
            parts.append(f"{sym} {hit.group(1)}")
    return base + (" " + " and ".join(parts) if parts else "")


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "see below" if value.model_dump() else "{}"
    return json.dumps(value, default=str)


def model_rows(model: type[BaseModel]) -> list[list[str]]:
    rows = []
    for name, field in model.model_fields.items():
        constraints = [f"{k} {v}" for k, v in (("≥", _meta(field, "ge")), (">", _meta(field, "gt")), ("≤", _meta(field, "le")), ("<", _meta(field, "lt"))) if v is not None]
        kind = type_name(field.annotation) + (f" ({', '.join(constraints)})" if constraints else "")
        rows.append([name, kind, _default(field), (field.description or "").replace("|", "/")])
    return rows


def _meta(field, attr: str) -> Any:
    for m in field.metadata:
        v = getattr(m, attr, None)
        if v is not None:
            return v
    return None


def settings_table(only: str | None = None) -> str:
    from lvmbench.protocols.base import PROTOCOLS
    from lvmbench.protocols.settings import HEAD_MODELS, MeanStd, Schedule

    names = [only] if only else PROTOCOLS.names()
    out = []
    for name in names:
        cls = PROTOCOLS.get(name)
        model = cls.Settings
        selectable = f"; select_metric: {', '.join(model.selectable)}" if model.selectable else ""
        out += [f"## {name} (families: {', '.join(cls.families)}; version {cls.version}{selectable})", ""]
        out += [tabulate(model_rows(model), headers=["key", "type", "default", "meaning"], tablefmt="github"), ""]
    out += [
        "Every protocol also takes `transformer: {key: value, ...}`: settings that replace the ones above when the "
        "encoder is a transformer (ViT, DeiT, EVA, SAM's ViT, Swin, MaxViT ...; `lvmbench.encoders.kinds`); results "
        "record `recipe: transformer`.",
        "",
    ]
    if only is None:
        out += ["## schedule: {kind, ...} (or the kind alone: schedule: cosine)", "", tabulate(model_rows(Schedule), headers=["key", "type", "default", "meaning"], tablefmt="github"), ""]
        out += ["## normalize: {mean, std, pixel_range}", "", tabulate(model_rows(MeanStd), headers=["key", "type", "default", "meaning"], tablefmt="github"), ""]
        from lvmbench.data.prompts.rules import PRESET_SOURCES, PromptRule

        out += ["## prompt: {preset, ...} (prompt protocols; defaults: preset tight; a preset fills every key, keys beside it override)", "",
                tabulate(model_rows(PromptRule), headers=["key", "type", "default", "meaning"], tablefmt="github"), "",
                tabulate([[k, v] for k, v in PRESET_SOURCES.items()], headers=["preset", "follows"], tablefmt="github"), ""]
        for head, model in HEAD_MODELS.items():
            if model.model_fields:
                out += [f"## head_params.{head}", "", tabulate(model_rows(model), headers=["key", "type", "default", "meaning"], tablefmt="github"), ""]
    return "\n".join(out).rstrip() + "\n"
