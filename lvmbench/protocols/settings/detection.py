"""Settings of the detection protocol (Faster R-CNN + FPN over any encoder)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from lvmbench.kit import Bool, Float, Fraction01, Int, NonNegFloat, PosFloat, PosInt
from lvmbench.protocols.settings.common import DROP_LAST_DOC, ProtocolSettings, Schedule

if TYPE_CHECKING:
    from lvmbench.spec import TaskSpec

class DetectionSettings(ProtocolSettings):
    backend: Literal["torchvision", "mmdet"] = Field("torchvision", description="torchvision | mmdet (needs an mmcv build with compiled ops)")
    lr: PosFloat = Field(1e-4, description="Adam learning rate")
    weight_decay: NonNegFloat = Field(1e-4, description="Adam weight decay")
    epochs: PosInt = Field(40, description="training epochs")
    batch_size: PosInt = Field(8, description="images per step")
    drop_last: Bool = Field(False, description=DROP_LAST_DOC)
    grad_clip: PosFloat | None = Field(None, description="gradient-norm clipping; none = off")
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")
    augment: Bool = Field(False, description="training augmentation (horizontal flips when hflip; mmdet's RandomFlip 0.5); resolved to false when it would change nothing")
    hflip: Bool = Field(True, description="random horizontal flips (with augment; resolved to false without it)")
    frozen_stages: Int = Field(1, ge=0, le=1, description="0: nothing frozen | 1: stem + first stage frozen (mmdet's frozen_stages=1)")
    norm_eval: Bool = Field(True, description="BatchNorm statistics frozen")
    resize: Literal["keep_ratio", "stretch"] = Field("keep_ratio", description="training resize to preprocess.size: keep_ratio (long side) | stretch")
    oversample_thr: Float | None = Field(None, gt=0, le=1, description="class-balanced repeat factor threshold (VinDr: 0.4); none = off")
    anchor_scale: PosFloat = Field(8, description="anchor scale (mmdet's octave base scale)")
    val_every: PosInt = Field(1, description="validate every n epochs (and after the last)")
    count_score_thr: Fraction01 = Field(0.5, description="score threshold of the per-image TP/FP/FN counts")
    paper_eval: Bool = Field(False, description="LVM-Med's evaluation: last epoch, 1333x800 test resize (result flagged)")
    rpn_proposals_train: PosInt = Field(1000, description="RPN proposals kept per image in training")
    rpn_proposals_test: PosInt = Field(1000, description="RPN proposals kept per image at test")
    rois_per_image: PosInt = Field(512, description="RoIs sampled per image for the box head")
    box_fc: PosInt = Field(1024, description="box head width")
    fpn_channels: PosInt = Field(256, description="FPN width")
    select_metric: str | None = Field(None, description="validation metric that selects the epoch; default: the task's primary metric")

    selectable = ("ap50", "ap", "ap75", "ar100")
    fallback_select = "ap50"

    @model_validator(mode="after")
    def _horizon(self) -> "DetectionSettings":
        self.schedule.check_horizon(self.epochs)
        return self

    def resolve(self, task: "TaskSpec") -> "DetectionSettings":
        augment = self.augment and self.hflip  # recorded settings show what took effect
        return self.model_copy(update={"select_metric": self.select_for(task, self.select_metric), "augment": augment, "hflip": augment})
