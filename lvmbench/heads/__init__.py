"""Heads on top of frozen or fine-tuned embeddings: ``HEADS.get(name)(in_dim, num_classes, **hp)``.

This module holds only the registry, without torch: its members (``basic``: linear, mlp;
``tversky``; ...) are imported at the first lookup, so a command that only validates head names
(task settings, ``--head``) never loads a model library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lvmbench.registry import Registry, import_members

HeadFactory = Callable[..., Any]  # (in_dim, num_classes, **hp) -> torch.nn.Module


def _load(reg: Registry[HeadFactory]) -> None:
    import_members(__name__)


HEADS: Registry[HeadFactory] = Registry("head", _load)
