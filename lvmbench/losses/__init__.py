"""Metric-learning and self-supervised losses: multi-similarity (+ miner), symmetric triplet, VICReg.

``metric_objective(name, hp)`` builds the supervised embedding objective the fine-tune protocol
uses for ``objective: ms | triplet``; it returns the loss module and the settings to record.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lvmbench.errors import UserError
from lvmbench.losses.multi_similarity import MS_PRESETS, MSParams, MultiSimilarityLoss, ms_mine, multi_similarity_loss
from lvmbench.losses.triplet import SymmetricTripletLoss, batch_triplets, symmetric_triplet_loss
from lvmbench.losses.vicreg import VICRegLoss, vicreg_terms

METRIC_OBJECTIVES = ("ms", "triplet")


def metric_objective(name: str, hp: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """(loss(embeddings, labels), recorded settings) for ``ms`` or ``triplet``.

    ``ms`` reads ``ms_preset`` (paper | official | pml, default pml) and optional overrides
    ``ms_alpha``, ``ms_beta``, ``ms_lambda``, ``ms_epsilon``; ``triplet`` reads ``triplet_margin``
    (default 0.1, SIRL).
    """
    if name == "ms":
        if hp.get("ms_preset", "pml") not in MS_PRESETS:
            raise UserError(f"unknown ms_preset '{hp.get('ms_preset')}'", fix=f"use one of {', '.join(sorted(MS_PRESETS))}")
        loss = MultiSimilarityLoss(
            hp.get("ms_preset", "pml"),
            alpha=hp.get("ms_alpha"),
            beta=hp.get("ms_beta"),
            lam=hp.get("ms_lambda"),
            epsilon=hp.get("ms_epsilon"),
        )
        return loss, {"ms_preset": loss.preset, **{f"ms_{k}": v for k, v in loss.params.as_dict().items()}}
    if name == "triplet":
        margin = float(hp.get("triplet_margin", 0.1))
        return SymmetricTripletLoss(margin), {"triplet_margin": margin}
    raise UserError(f"unknown fine-tuning objective '{name}'", fix="set objective to ce, ms or triplet in the task's protocol hyperparameters")


__all__ = [
    "METRIC_OBJECTIVES",
    "MSParams",
    "MS_PRESETS",
    "MultiSimilarityLoss",
    "SymmetricTripletLoss",
    "VICRegLoss",
    "batch_triplets",
    "metric_objective",
    "ms_mine",
    "multi_similarity_loss",
    "symmetric_triplet_loss",
    "vicreg_terms",
]
