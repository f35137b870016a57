"""``lvmbench protocols``: each protocol's settings model as a table (key, type, default, doc)."""

from __future__ import annotations

from tabulate import tabulate

from lvmbench.data.prompts.rules import PRESET_SOURCES, PromptRule
from lvmbench.kit.doc import model_rows
from lvmbench.protocols.declared import DECLARED
from lvmbench.protocols.settings import HEAD_MODELS, MeanStd, Schedule


def settings_table(only: str | None = None) -> str:
    names = [only] if only else DECLARED.names()
    out = []
    for name in names:
        cls = DECLARED.get(name)
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

        out += ["## prompt: {preset, ...} (prompt protocols; defaults: preset tight; a preset fills every key, keys beside it override)", "",
                tabulate(model_rows(PromptRule), headers=["key", "type", "default", "meaning"], tablefmt="github"), "",
                tabulate([[k, v] for k, v in PRESET_SOURCES.items()], headers=["preset", "follows"], tablefmt="github"), ""]
        for head, model in HEAD_MODELS.items():
            if model.model_fields:
                out += [f"## head_params.{head}", "", tabulate(model_rows(model), headers=["key", "type", "default", "meaning"], tablefmt="github"), ""]
    return "\n".join(out).rstrip() + "\n"
