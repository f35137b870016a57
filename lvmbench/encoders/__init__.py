"""Encoder registry: ``create_encoder(name, weights=PATH)`` -> (Encoder, EncoderIdentity).

Names resolve in this order: registered names (``lvmmed-r50``, ``lvmmed-vitb``, plugins from the
``lvmbench.encoders`` entry point group), ``torchvision/<arch>`` and ``timm/<name>`` prefixes, bare
torchvision ResNet names, then any timm model name. Nothing is downloaded: without ``weights`` the
encoder is randomly initialised (seeded) and named ``random-init`` in results.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import torch

from lvmbench.encoders.adapters import TORCHVISION_RESNETS, TimmEncoder, TorchvisionResNet
from lvmbench.encoders.base import Encoder, EncoderIdentity, FeatureInfo, InputSpec
from lvmbench.encoders.checkpoint import DEFAULT_ALLOW, load_into, read_state_dict, sha256_file
from lvmbench.errors import CheckpointError, UnknownNameError
from lvmbench.registry import Registry, suggest

RANDOM_INIT = "random-init"

# A builder takes (weights_path or None) and returns an Encoder with weights loaded.
Builder = Callable[[Path | None], Encoder]


def _load_plugins(reg: Registry[Builder]) -> None:
    from lvmbench.encoders import lvmmed  # noqa: F401  (registers lvmmed-*)

    for ep in entry_points(group="lvmbench.encoders"):
        reg.add(ep.name, ep.load())


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
    import timm

    base = name.split("/", 1)[1] if name.startswith(("timm/", "torchvision/")) else name
    if name.startswith("torchvision/"):
        return base in TORCHVISION_RESNETS
    return base in TORCHVISION_RESNETS or timm.is_model(base)


def _unknown(name: str) -> UnknownNameError:
    import timm

    pool = ENCODERS.names() + list(TORCHVISION_RESNETS) + timm.list_models()
    hint = suggest(name.split("/", 1)[-1], pool)
    msg = f"no encoder '{name}'"
    msg += f"; did you mean '{hint}'?" if hint else "; see `lvmbench encoders`"
    return UnknownNameError(msg)


def create_encoder(name: str, weights: str | Path | None = None, *, seed: int = 0) -> tuple[Encoder, EncoderIdentity]:
    """Build the encoder and load ``weights`` strictly (only allow-listed keys may differ)."""
    wpath = Path(weights) if weights else None
    if wpath is not None and not wpath.is_file():
        raise CheckpointError("weights file not found", path=wpath, fix="pass an existing file to --weights")
    torch.manual_seed(seed)
    if name in ENCODERS:
        enc = ENCODERS.get(name)(wpath)
        report = getattr(enc, "_load_report", {})
    else:
        if not is_known(name):
            raise _unknown(name)
        enc = _generic(name)
        report = {}
        if wpath is not None:
            sd = read_state_dict(wpath)
            target = enc.model if isinstance(enc, TimmEncoder) else enc
            report = load_into(target, sd, allow_unexpected=DEFAULT_ALLOW, path=wpath).as_dict()
    ident = EncoderIdentity(
        name=name,
        weights_sha256=sha256_file(wpath) if wpath else RANDOM_INIT,
        weights_path=str(wpath.resolve()) if wpath else None,
        load_report=report,
    )
    return enc, ident


def weights_identity(weights: str | Path | None) -> str:
    if weights and not Path(weights).is_file():
        raise CheckpointError("weights file not found", path=weights, fix="pass an existing file to --weights")
    return sha256_file(weights) if weights else RANDOM_INIT


__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderIdentity",
    "FeatureInfo",
    "InputSpec",
    "RANDOM_INIT",
    "create_encoder",
    "is_known",
    "weights_identity",
]
