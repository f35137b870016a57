"""The ``prompt:`` block of the prompt protocols: how boxes, points and correction clicks are drawn
from the ground truth, as named presets that follow the published evaluators' code.

A preset fills every field; fields written next to it override it (``{preset: lvmmed, jitter_px:
10}``), and a result then says ``lvmmed+jitter_px`` rather than ``lvmmed`` (see :meth:`PromptRule.label`).

Presets and the code each one transcribes (read, not copied):

- ``lvmmed``: LVM-Med ``dataloader/dataset.py::get_bbox_from_mask``, called from
  ``SegmentationDataset.__getitem__``, whose per-index cache keeps the first draw: the box of every
  ``mask > 0`` pixel on the 256 mask, each side moved outward by numpy ``randint(0, 20)`` (0-19 px)
  in every split, test included, drawn once; an empty mask gets a random box (a point from
  ``normal(0, 1024, 2)``, the same outward moves, clipped to [0, 1024]) and is scored with
  empty = 1 (``utils/SurfaceDice.py::compute_dice_coefficient``), every slice averaged.
- ``medsam``: MedSAM ``train_one_gpu.py::NpyDataset.__getitem__`` (training: each side outward by
  Python ``random.randint(0, 20)``, 0-20 px inclusive, at 1024, redrawn at every use) and
  ``comparisons/SAM/infer_SAM_2D_npz.py`` (comparison: each side exactly +20 px at 1024). MedSAM
  prompts only labels present in the slice: empty ground truth is skipped.
- ``sam-med2d``: SAM-Med2D ``utils.py::get_boxes_from_mask`` (the box of the largest 8-connected
  component, skimage ``regionprops`` end = last pixel + 1; training shifts the whole box by
  ``randint(-m, m)`` in x and in y with ``m = min(5, int(0.1 * min(w, h) * 5))`` at 256, redrawn;
  ``DataLoader.py::TestingDataset`` uses ``max_pixel = 0``: no shift), ``utils.py::init_point_sampling``
  (points) and ``utils.py::select_random_points`` (a click drawn uniformly from the error pixels).
- ``tight``: lvmbench's clean rule: the tight box in validation and test, training boxes moved
  outward by 0-19 px at 256 and redrawn; empty ground truth gets no prompt and no score.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, model_validator

Preset = Literal["lvmmed", "medsam", "sam-med2d", "tight"]
Split = Literal["train", "val", "test"]
JitterKind = Literal["none", "outward", "shift", "fixed"]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
PosInt = Annotated[int, Strict(), Field(gt=0)]

# Bump when drawing code changes what a rule draws: drawn prompt files and results become stale.
DRAW_VERSION = 1

PRESETS: dict[str, dict[str, Any]] = {
    "lvmmed": {"resolution": 256, "box": "union", "box_end": "last", "jitter": "outward", "jitter_px": 19, "jitter_splits": ["train", "val", "test"],
               "eval_jitter": "none", "eval_jitter_px": 0, "redraw": False, "empty": "random_box", "point_rule": "uniform", "click": "interior"},
    "medsam": {"resolution": 1024, "box": "union", "box_end": "last", "jitter": "outward", "jitter_px": 20, "jitter_splits": ["train"],
               "eval_jitter": "fixed", "eval_jitter_px": 20, "redraw": True, "empty": "skip", "point_rule": "uniform", "click": "interior"},
    "sam-med2d": {"resolution": 256, "box": "largest_component", "box_end": "past_last", "jitter": "shift", "jitter_px": 5, "jitter_splits": ["train"],
               "eval_jitter": "none", "eval_jitter_px": 0, "redraw": True, "empty": "skip", "point_rule": "sam-med2d", "click": "error-uniform"},
    "tight": {"resolution": 256, "box": "union", "box_end": "last", "jitter": "outward", "jitter_px": 19, "jitter_splits": ["train"],
               "eval_jitter": "none", "eval_jitter_px": 0, "redraw": True, "empty": "skip", "point_rule": "uniform", "click": "interior"},
}
for _p in PRESETS.values():
    _p.update(points=0, iterations=0)

# The source each preset follows (README table, ``lvmbench protocols``).
PRESET_SOURCES = {
    "lvmmed": "LVM-Med dataloader/dataset.py::get_bbox_from_mask (+ SegmentationDataset cache)",
    "medsam": "MedSAM train_one_gpu.py::NpyDataset.__getitem__ (train); comparisons/SAM/infer_SAM_2D_npz.py (test)",
    "sam-med2d": "SAM-Med2D utils.py::get_boxes_from_mask, init_point_sampling, select_random_points; DataLoader.py::TestingDataset",
    "tight": "lvmbench (clean rule)",
}


class PromptRule(BaseModel):
    """``protocols.<seg*-prompt>.prompt``: how prompts are drawn from the ground truth."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    preset: Preset = Field("tight", description="lvmmed | medsam | sam-med2d | tight: fills every other key (README: presets)")
    resolution: PosInt = Field(256, description="side of the square grid the ground truth is resampled to (nearest) for boxes and points; pixel amounts are at this side")
    box: Literal["union", "largest_component", "none"] = Field("union", description="box around every object pixel | around the largest 8-connected component | no box")
    box_end: Literal["last", "past_last"] = Field("last", description="x_max/y_max = the last object pixel (LVM-Med, MedSAM) | one past it (SAM-Med2D, regionprops)")
    jitter: JitterKind = Field("outward", description="boxes of jitter_splits: none | outward (each side out by 0..px, clipped) | shift (whole box by [-m, m), m = min(px, min(w,h)//2)) | fixed (each side out by px, clipped)")
    jitter_px: NonNegInt = Field(19, description="jitter amount in pixels at resolution")
    jitter_splits: list[Split] = Field(default_factory=lambda: ["train"], description="splits whose boxes get jitter (out-of-distribution sets count as test); the others get eval_jitter")
    eval_jitter: JitterKind = Field("none", description="boxes of the other splits: none | outward | shift | fixed")
    eval_jitter_px: NonNegInt = Field(0, description="eval_jitter amount in pixels at resolution")
    redraw: StrictBool = Field(True, description="training boxes redrawn at every use (true) or drawn once with the prompt file (false: LVM-Med's cached dataset)")
    empty: Literal["skip", "random_box"] = Field("skip", description="empty ground truth: skip (no prompt, not trained on, not scored, counted) | random_box (LVM-Med's random box, scored with empty = 1)")
    points: NonNegInt = Field(0, description="point prompts per image, drawn by point_rule (given with the box, or alone with box: none)")
    point_rule: Literal["uniform", "sam-med2d"] = Field("uniform", description="uniform: distinct object pixels, label 1 | sam-med2d: one object pixel, or k//2 object + the rest background pixels (init_point_sampling)")
    iterations: NonNegInt = Field(0, description="correction clicks after the first prediction (evaluation); Dice after each is recorded")
    click: Literal["interior", "error-uniform"] = Field("interior", description="interior: the deepest pixel of the largest error component (missed -> positive, extra -> negative) | error-uniform: a uniform error pixel (SAM-Med2D)")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "tight")
        if not isinstance(preset, str) or preset not in PRESETS:
            return data  # the Literal check names the valid presets (and the nearest one)
        return {**PRESETS[preset], **data}

    @model_validator(mode="after")
    def _check(self) -> PromptRule:
        if self.box == "none" and self.points == 0:
            raise ValueError("a prompt needs a box or points: set points: k with box: none")
        if self.box == "none" and self.empty == "random_box":
            raise ValueError("empty: random_box gives a box; with box: none use empty: skip")
        return self

    def overrides(self) -> list[str]:
        """Keys whose value differs from the preset's."""
        base = PromptRule.model_validate({"preset": self.preset})
        return [k for k in type(self).model_fields if getattr(self, k) != getattr(base, k)]

    def label(self) -> str:
        """``lvmmed``, or ``lvmmed+jitter_px`` when a key was changed (points and correction clicks
        included): results pair with a reported row only when this agrees."""
        return "+".join([self.preset, *self.overrides()])

    def empty_label(self) -> str:
        return "random-box,empty=1" if self.empty == "random_box" else "skip"

    def split_jitter(self, split: str) -> tuple[str, int]:
        """(kind, px) of a split's boxes; ``ood:*`` sets are test sets."""
        role = "test" if split.startswith("ood:") else split
        if role in self.jitter_splits:
            return self.jitter, self.jitter_px if self.jitter != "none" else 0
        return self.eval_jitter, self.eval_jitter_px if self.eval_jitter != "none" else 0

    def redrawn(self, split: str) -> bool:
        """Whether this split's boxes are redrawn at every use (training only)."""
        return split == "train" and self.redraw and self.split_jitter("train")[0] not in ("none", "fixed")


def legacy_prompt_keys(data: Any) -> None:
    """The settings the ``prompt:`` block replaced: one line saying what to write instead."""
    if not isinstance(data, dict):
        return
    if "paper_boxes" in data:
        raise ValueError("'paper_boxes' was replaced by the prompt block: write prompt: {preset: lvmmed} for the paper's boxes (or remove it: the default is preset tight)")
    if "box_jitter" in data:
        n = data["box_jitter"]
        px = n - 1 if isinstance(n, int) and n > 0 else 0
        raise ValueError(f"'box_jitter' was replaced by the prompt block: write prompt: {{jitter_px: {px}}} (box_jitter {n} drew 0..{px} px; the px are now at prompt.resolution, 256 by default)")
