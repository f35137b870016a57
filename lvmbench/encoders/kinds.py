"""Which recipe an encoder follows: ``transformer`` (self-attention blocks: ViT, DeiT, EVA, BEiT,
SAM's ViT, Swin, and hybrids such as MaxViT or CoAtNet) or ``cnn`` (everything else).

Transformers trained from a random or foreign start need another recipe than a ResNet (lower rates,
warm-up; the paper's ViT rows use their own learning rates and batch sizes), so a task file may give
a protocol a ``transformer:`` block of settings that replace its own for these encoders
(``lvmbench.protocols.base.resolve_settings``); the kind a result ran with is in its settings
(``recipe``). The kind comes from the architecture alone: built on the meta device (no memory, no
weights), it is a transformer when some module is an attention block with heads.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from lvmbench.encoders.registry import ENCODERS, _generic

TRANSFORMER = "transformer"
CNN = "cnn"
KINDS = (CNN, TRANSFORMER)


def has_attention_blocks(model: nn.Module) -> bool:
    """True when a module is multi-head attention (timm's ``Attention``, ``WindowAttention``,
    ``EvaAttention``, ``Attention2d``; torch's ``MultiheadAttention``)."""
    return any(hasattr(m, "num_heads") and "attention" in type(m).__name__.lower() for m in model.modules())


@functools.lru_cache(maxsize=64)
def encoder_kind(name: str) -> str:
    """``transformer`` or ``cnn`` for an encoder name (registered, preset, torchvision or timm).

    A registered builder may state it (``builder.architecture``); a preset follows its architecture;
    otherwise the builder runs on the meta device without weights. A plugin whose builder cannot
    run without its weights and states nothing counts as ``cnn``: it runs the default settings
    (a plugin sets ``builder.architecture = "transformer"`` to get the transformer blocks)."""
    if name in ENCODERS:
        builder = ENCODERS.get(name)
        declared = getattr(builder, "architecture", None)
        if declared in KINDS:
            return declared
        arch = getattr(builder, "arch", None)  # a preset of released weights: its architecture decides
        if isinstance(arch, str) and arch != name:
            return encoder_kind(arch)
        try:
            with torch.device("meta"):
                model = builder(None)
        except Exception:  # noqa: BLE001 - a builder that needs its weights file and says nothing
            return CNN
    else:
        try:
            with torch.device("meta"):
                model = _generic(name)
        except Exception:  # noqa: BLE001 - a model whose __init__ needs real tensors: build it for real
            model = _generic(name)
    return TRANSFORMER if has_attention_blocks(model) else CNN
