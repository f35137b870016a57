"""Pretraining objectives: ``OBJECTIVES.get(name)(encoder, **cfg)`` -> ``PretrainObjective``.

An objective owns every trainable module beyond the encoder (projectors, GCNs, 1x1 convs ...) as
registered submodules, so ``objective.parameters()`` is exactly what the optimiser must see.

Its constructor's keyword arguments are its settings (``-o KEY=VALUE``), and their annotations are
their types and bounds (the kit's strict scalars, ``Width``): ``validate_options`` checks what a
user wrote against them before anything is built, so a wrong type, a zero width or a misspelt key
is one line rather than a traceback or an allocation that takes the machine down.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, create_model
from torch import nn

from lvmbench.encoders.base import Encoder
from lvmbench.errors import UserError
from lvmbench.kit import first_problem
from lvmbench.registry import Registry, import_members, suggest

# A layer width (projector, expander, GCN). VICReg's widest expander ablation is 32768 wide; a
# square layer that wide already holds 4 GB of float32 weights before gradients and Adam's state.
MAX_WIDTH = 32768
Width = Annotated[int, Strict(), Field(ge=1, le=MAX_WIDTH)]


@dataclass
class PretrainBatch:
    """Two augmented views of N images and where each view was cropped from its source image.

    ``boxes*`` are (N, 4) tensors (x1, y1, x2, y2) in the source image's normalised [0, 1]
    coordinates, after any flip (a flipped view has x1 > x2), so objectives can match locations.
    """

    view1: torch.Tensor
    view2: torch.Tensor
    boxes1: torch.Tensor
    boxes2: torch.Tensor


class PretrainObjective(nn.Module):
    name: ClassVar[str]

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder
        # The last step's (N, D) outputs the monitors read (detached): "embedding" (the encoder's
        # pooled vector of the first views, what evaluation embeds) and "projection" (what the loss
        # sees). Not state: never saved, never part of the graph.
        self.outputs: dict[str, torch.Tensor] = {}
        # Set by the trainer on monitor steps: objectives may then log costlier diagnostics
        # (graph matching: the noise-free matching's agreement with the identity).
        self.diagnose = False

    def remember(self, **tensors: torch.Tensor) -> None:
        self.outputs = {k: v.detach() for k, v in tensors.items()}

    def forward(self, batch: PretrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (scalar loss, logs) for one batch."""
        raise NotImplementedError

    def settings(self, options: dict) -> dict:
        """Every constructor setting, defaults included, as this objective was built from
        ``options`` (what pretrain.json and the resume check record: a default that changes
        between versions must not go unnoticed). Subclasses expand nested configs."""
        out: dict = {}
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "encoder") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[name] = options.get(name, p.default)
        out.update({k: v for k, v in options.items() if k not in out})  # **kwargs objectives
        return out

    def check_view_size(self, size: int) -> None:
        """Refuse (ValueError) settings that do not fit views of ``size`` pixels."""


def _keywords(cls: type[PretrainObjective]) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "encoder") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@functools.cache
def options_model(cls: type[PretrainObjective]) -> type[BaseModel]:
    """The constructor's settings as a model: annotations are types and bounds, defaults defaults."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    fields: dict[str, Any] = {k: (hints.get(k, Any), p.default) for k, p in _keywords(cls).items()}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())  # a plugin's **kwargs
    return create_model(f"{cls.__name__}Options", __config__=ConfigDict(extra="allow" if takes_any else "forbid"), **fields)


def validate_options(name: str, options: dict[str, Any]) -> None:
    """One line (UserError) for the first option of ``-o`` that objective ``name`` would refuse."""
    model = options_model(OBJECTIVES.get(name))
    try:
        model.model_validate(options)
    except ValidationError as e:
        p = first_problem(e, model)
        known = ", ".join(model.model_fields)
        if e.errors()[0]["type"] == "unexpected_keyword_argument":  # a key inside a dataclass option
            parent, _, key = p.key.rpartition(".")
            ann = model.model_fields[parent].annotation
            keys = [f.name for a in (typing.get_args(ann) or (ann,)) if dataclasses.is_dataclass(a) for f in dataclasses.fields(a)]
            hint = suggest(key, keys)
            raise UserError(f"objective '{name}': -o {parent} has no key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""), fix=f"keys of {parent}: {', '.join(keys)}") from None
        if p.kind == "unknown":
            msg = f"objective '{name}' has no option '{p.key}'" + (f"; did you mean '{p.hint}'?" if p.hint else "")
            raise UserError(msg, fix=f"options: {known}") from None
        raise UserError(f"objective '{name}': -o {p.key}: {p.text}{p.shown}", fix=f"options of '{name}': {known}") from None


def _load(reg: Registry[type[PretrainObjective]]) -> None:
    import_members(__name__)


OBJECTIVES: Registry[type[PretrainObjective]] = Registry("pretraining objective", _load)
