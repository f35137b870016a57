"""The two plain heads: ``linear`` and LVM-Med's ``mlp`` (Table 12)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lvmbench.heads import HEADS


@HEADS.register("linear")
def linear_head(in_dim: int, num_classes: int, **_: object) -> nn.Module:
    return nn.Linear(in_dim, num_classes)


@HEADS.register("mlp")
def mlp_head(in_dim: int, num_classes: int, hidden: Sequence[int] = (512, 256), dropout: float = 0.0, **_: object) -> nn.Module:
    """LVM-Med's MLP heads (Table 12): 2048 -> 512 -> 256 (brain) or 512 -> 128 (FGADR) -> classes."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = h
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)
