"""The encoder name registry and how a name that is not registered resolves (``torchvision/<arch>``,
``timm/<name>``, a bare torchvision ResNet name, any timm model name)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import timm

from lvmbench.encoders.adapters import (
    TORCHVISION_RESNETS,
    TimmEncoder,
    TorchvisionResNet,
)
from lvmbench.encoders.base import Encoder
from lvmbench.errors import UnknownNameError, UserError
from lvmbench.registry import Registry, load_entry_points, suggest

RANDOM_INIT = "random-init"

# A builder takes (weights_path or None) and returns an Encoder with weights loaded.
Builder = Callable[[Path | None], Encoder]


# the built-in modules that register names: lvmmed-*, sam-vitb, medsam-vitb, the released-weight
# presets (imagenet-r50-tv, dino-r50, ...); imported by name at the first lookup (registry.import_members)
BUILTIN_MODULES = ("lvmbench.encoders.lvmmed", "lvmbench.encoders.sam", "lvmbench.encoders.pretrained")


def _load_plugins(reg: Registry[Builder]) -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    load_entry_points(reg, "lvmbench.encoders")  # a broken plugin spoils only its own name


ENCODERS: Registry[Builder] = Registry("encoder", _load_plugins)


def _generic(arch: str) -> Encoder:
    if arch.startswith("torchvision/"):
        return TorchvisionResNet(arch.split("/", 1)[1])
    if arch.startswith("timm/"):
        return TimmEncoder(arch.split("/", 1)[1])
    if arch in TORCHVISION_RESNETS:
        return TorchvisionResNet(arch)
    return TimmEncoder(arch)


def is_known(name: str) -> bool:
    if name in ENCODERS:
        return True
    if name in ENCODERS.broken():  # a broken plugin's name is never taken for a timm model of that name
        return False
    base = name.split("/", 1)[1] if name.startswith(("timm/", "torchvision/")) else name
    if name.startswith("torchvision/"):
        return base in TORCHVISION_RESNETS
    return base in TORCHVISION_RESNETS or timm.is_model(base)


def unknown_encoder(name: str) -> UserError:
    """Why ``name`` is no encoder: a plugin that registered it but failed to import says so (its
    one-line error names the package and the import error), else the nearest known name."""
    broken = ENCODERS.broken().get(name)
    if broken is not None:
        return broken
    pool = ENCODERS.names() + list(TORCHVISION_RESNETS) + timm.list_models()
    hint = suggest(name.split("/", 1)[-1], pool)
    msg = f"no encoder '{name}'"
    msg += f"; did you mean '{hint}'?" if hint else "; see `lvmbench encoders`"
    return UnknownNameError(msg)


_unknown = unknown_encoder  # the older private name
