"""Settings of the native-resolution (``*_clean``) segmentation scores, and the conventions a result states.

Shared by the U-Net protocols (``SegSettings``) and the prompt protocols (``PromptEvalSettings``) as a
mixin, so a task sets ``empty_policy`` and ``nsd_tolerance_mm`` the same way under every
segmentation protocol and every result records them (resolved settings) and states them in
``extra.conventions`` (a flat str -> str map the leaderboard can compare).

Default tolerance 2: MedSAM's evaluation (``evaluation/compute_metrics.py``,
``metrics/compute_metrics_flare22.py``) scores every structure at 2 mm in 3D and 2 pixels in 2D;
FLARE's organ benchmarks use 1 mm. Volumes are measured in millimetres through the voxel spacing
their header gives (the same spacing HD95 uses); 2D images carry no physical pixel size in the
formats read here, so 2D tolerances are in pixels of the native image.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict

from lvmbench.metrics.empty_masks import EmptyPolicy

NSD_SURFACE = "surfels at voxel corners, weighted by length/area (DeepMind surface-distance)"


class CleanScoring(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    empty_policy: EmptyPolicy = Field(
        "one",
        description="*_clean Dice/IoU/NSD/HD95 of a class absent from a case's ground truth: one (1 if the prediction is empty too, else 0; "
        "LVM-Med, MedSAM) | zero | skip (left out of the mean); the paper's per-image dice keeps eps = 1e-6",
    )
    nsd_tolerance_mm: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)] | None = Field(
        2.0, description="normalised surface Dice tolerance: mm for volumes (header spacing), pixels for 2D images; none = no NSD (MedSAM: 2)"
    )


def clean_conventions(hp: Any, volumes: bool) -> dict[str, str]:
    """What the ``*_clean`` numbers of a result were measured under (``extra.conventions``)."""
    # "clean_": the primary metrics (the paper's per-image Dice, the prompts' empty-slice rule) state
    # their own empty_policy; this one is the native-resolution scores'
    out = {"clean_empty_policy": str(hp.empty_policy)}
    if hp.nsd_tolerance_mm is not None:
        out["nsd_tolerance"] = f"{hp.nsd_tolerance_mm:g} {'mm' if volumes else 'px'}"
        out["nsd_surface"] = NSD_SURFACE
    return out
