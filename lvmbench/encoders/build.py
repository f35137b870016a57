"""Building an encoder by name: ``create_encoder`` and the weights' identity (see the package's doc)."""

from __future__ import annotations

from pathlib import Path

import torch

from lvmbench.encoders.adapters import TimmEncoder
from lvmbench.encoders.base import (
    Encoder,
    EncoderIdentity,
)
from lvmbench.encoders.channels import accepts_in_channels
from lvmbench.encoders.checkpoint import (
    DEFAULT_ALLOW,
    load_into,
    read_metadata,
    read_state_dict,
    sha256_file,
)
from lvmbench.encoders.pretrained import released_weights
from lvmbench.encoders.registry import (  # noqa: F401 (the package's API)
    ENCODERS,
    RANDOM_INIT,
    Builder,
    _generic,
    _unknown,
    is_known,
    unknown_encoder,
)
from lvmbench.errors import CheckpointError, UserError
from lvmbench.registry import suggest


def trained_pooling(weights: str | Path | None) -> str | None:
    """The pooling a ``lvmbench pretrain`` checkpoint's objective trained, from its metadata."""
    if not weights:
        return None
    meta = read_metadata(weights)
    return meta.get("pooling") if meta.get("lvmbench") == "pretrain" else None


def _apply_pooling(enc: Encoder, name: str, pooling: str | None, trained: str | None, wpath: Path | None) -> None:
    if pooling is not None:
        if pooling not in enc.poolings:
            hint = suggest(pooling, list(enc.poolings))
            msg = f"encoder '{name}' has no pooling '{pooling}'" + (f"; did you mean '{hint}'?" if hint else "")
            raise UserError(msg, fix=f"use one of: {', '.join(enc.poolings)} (meanings in lvmbench.encoders.POOLINGS)")
        enc.set_pooling(pooling)
    elif trained is not None:
        if trained not in enc.poolings:
            raise CheckpointError(
                f"the checkpoint was pretrained with pooling '{trained}', which encoder '{name}' does not offer",
                path=wpath,
                fix=f"evaluate it with the encoder it was pretrained with, or choose a pooling: {', '.join(enc.poolings)}",
            )
        enc.set_pooling(trained)


def create_encoder(
    name: str, weights: str | Path | None = None, *, seed: int = 0, pooling: str | None = None, in_channels: int | None = None,
    pretrained: bool = False,
) -> tuple[Encoder, EncoderIdentity]:
    """Build the encoder and load ``weights`` strictly (only allow-listed keys may differ).

    ``in_channels``: the task's channel count, passed to a registered builder that takes it.

    ``pooling`` overrides how ``embed`` pools (see ``Encoder.poolings``); by default a checkpoint
    from ``lvmbench pretrain`` is evaluated with the pooling its objective trained."""
    if pretrained:  # the released weights, from the local cache only (encoders/pretrained.py)
        weights = released_weights(name, Path(weights) if weights else None, pretrained=True)
    wpath = Path(weights) if weights else None
    if wpath is not None and not wpath.is_file():
        raise CheckpointError("weights file not found", path=wpath, fix="pass an existing file to --weights")
    torch.manual_seed(seed)
    if name in ENCODERS:
        builder = ENCODERS.get(name)
        # a plugin builder with an in_channels keyword is told the task's channel count (encoders/channels.py)
        enc = builder(wpath, in_channels=in_channels) if in_channels is not None and accepts_in_channels(builder) else builder(wpath)
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
    _apply_pooling(enc, name, pooling, trained_pooling(wpath), wpath)
    ident = EncoderIdentity(
        name=name,
        weights_sha256=sha256_file(wpath) if wpath else RANDOM_INIT,
        weights_path=str(wpath.resolve()) if wpath else None,
        load_report=report,
        pooling=enc.pooling,
    )
    return enc, ident


def weights_identity(weights: str | Path | None) -> str:
    if weights and not Path(weights).is_file():
        raise CheckpointError("weights file not found", path=weights, fix="pass an existing file to --weights")
    return sha256_file(weights) if weights else RANDOM_INIT
