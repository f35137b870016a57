"""Settings of the segmentation protocols: U-Net 2D / slice-wise 3D (CNN and ViT) and SAM-style prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from lvmbench.data.prompts.files import draw_key, prompt_identity
from lvmbench.data.prompts.rules import PromptRule, legacy_prompt_keys
from lvmbench.kit import (
    Bool,
    Fraction01,
    NonNegFloat,
    PosFloat,
    PosInt,
    StrictModel,
    choice_msg,
)
from lvmbench.protocols.clean_scoring import CleanScoring
from lvmbench.protocols.settings.common import (
    DROP_LAST_DOC,
    NORMALIZE_DOC,
    Normalize,
    ProtocolSettings,
    Schedule,
)

if TYPE_CHECKING:
    from lvmbench.spec import TaskSpec

class SegSettings(ProtocolSettings, CleanScoring):
    lr: PosFloat = Field(1e-3, description="Adam learning rate")
    epochs: PosInt = Field(30, description="training epochs; validation after each")
    batch_size: PosInt = Field(16, description="training minibatch (images or slices)")
    drop_last: Bool = Field(False, description=DROP_LAST_DOC)
    eval_batch_size: PosInt | None = Field(None, description="validation/test batch; default max(16, batch_size)")
    weight_decay: NonNegFloat = Field(0.0, description="Adam weight decay")
    betas: tuple[Fraction01, Fraction01] = Field((0.9, 0.999), description="Adam betas")
    grad_clip: NonNegFloat | None = Field(1.0, description="gradient-norm clipping; 0 or none = off")
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")
    augment: Bool = Field(False, description="random horizontal flips of image and mask in training (LVM-Med: none)")
    minmax: Bool = Field(True, description="per-image min-max to 0-255 after resizing (LVM-Med's dataset_ete.py)")
    hd95: Bool = Field(True, description="score HD95 at native resolution on the test split")
    score_classes: list[PosInt] | None = Field(None, description="foreground classes scored and selected on; default: all")
    decoder_channels: list[PosInt] | None = Field(None, description="U-Net decoder widths; default smp's (256, 128, 64, 32, 16)")
    select_metric: str | None = Field(None, description="validation metric that selects the epoch; default: the task's primary metric")

    @model_validator(mode="after")
    def _horizon(self) -> "SegSettings":
        self.schedule.check_horizon(self.epochs)
        return self

    def resolve(self, task: "TaskSpec") -> "SegSettings":
        k = task.num_classes
        score = list(self.score_classes) if self.score_classes is not None else list(range(1, k))
        if not score or any(not 0 < c < k for c in score):
            raise ValueError(f"score_classes {score} must name foreground classes 1..{k - 1} of the task's {k} classes")
        return self.model_copy(update={
            "score_classes": score,
            "eval_batch_size": self.eval_batch_size or max(16, self.batch_size),
            "select_metric": self.select_for(task, self.select_metric),
        })


class Seg2DSettings(SegSettings):
    selectable = ("dice", "iou")
    fallback_select = "dice"


class Seg3DSettings(SegSettings):
    volume_norm: Literal["med3d", "percentile", "minmax"] = Field("med3d", description="volume intensities to 0-255: med3d (LVM-Med's MMWHS) | percentile | minmax")
    balanced: Bool = Field(True, description="train on slices with a scored class + as many drawn from the rest (LVM-Med)")

    selectable = ("iou3d", "dice3d", "dice", "iou")
    fallback_select = "iou3d"


class SegViTSettings(Seg2DSettings):
    """``seg2d-vit``: the U-Net path for ViT encoders (simple feature pyramid from the last block),
    with the paper's "Foundation Model" schedule (Tables 7-8) in the task file."""


class Seg3DViTSettings(Seg3DSettings):
    """``seg3d-vit``: ``seg3d`` for ViT encoders, with the paper's "Foundation Model" schedule."""


class PromptEvalSettings(ProtocolSettings, CleanScoring):
    """Box-prompted SAM-style segmentation, scoring only (``seg2d-prompt-zeroshot``): the encoder's
    image embedding + SAM's prompt encoder and mask decoder (lvmbench/heads/sam.py)."""

    normalize: Normalize = Field("encoder", description=NORMALIZE_DOC.replace("default: the task's preprocess.intensity", "default: encoder (SAM's preprocess = ImageNet mean/std)"))
    image_size: PosInt = Field(1024, description="side of the encoder's input (SAM: 1024); masks are scored at image_size / 4 (SAM's decoder output)")
    resize: Literal["nearest", "bilinear"] = Field("nearest", description="image resize (the paper: nearest for images and masks)")
    minmax: Bool = Field(True, description="per-image min-max to 0-255 after resizing (LVM-Med's SAM dataset)")
    decoder_weights: str | None = Field(None, description="SAM-layout checkpoint of prompt_encoder.* + mask_decoder.* (a whole SAM/MedSAM file works); none = random init; CLI: --decoder-weights")
    decoder_sha256: str | None = Field(None, description="filled by lvmbench: sha256 of decoder_weights (part of the result's identity)")
    prompt_classes: list[PosInt] | None = Field(None, description="foreground classes that form the prompted object (one box around all of them); default: every foreground class (the paper's gt > 0)")
    # --- prompts: the typed block and its presets live in lvmbench/data/prompts/rules.py -----------
    prompt: PromptRule = Field(default_factory=PromptRule, description="how boxes, points and correction clicks are drawn: {preset: lvmmed | medsam | sam-med2d | tight, ...} (README: presets)")
    eval_batch_size: PosInt = Field(16, description="images per forward pass when encoding and scoring")
    hd95: Bool = Field(True, description="score HD95 at native resolution on the test split")
    decoder_dim: PosInt = Field(256, description="SAM decoder width (256 for SAM checkpoints; smaller only for tests)")
    decoder_depth: PosInt = Field(2, description="two-way transformer blocks (SAM: 2)")
    decoder_mlp_dim: PosInt = Field(2048, description="two-way transformer MLP width (SAM: 2048)")
    decoder_heads: PosInt = Field(8, description="two-way transformer attention heads (SAM: 8)")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16 or v < 32:
            raise ValueError(f"image_size {v} must be a multiple of 16 and at least 32 (SAM's embedding is at stride 16)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        legacy_prompt_keys(data)  # paper_boxes / box_jitter: one line saying what to write instead
        return data

    def identity_view(self, unit: Any) -> dict[str, Any]:
        """What a result's identity holds of these settings (lvmbench.identity): the decoder file's
        sha256 but not its path (the same bytes at two paths are one decoder), and the prompts'
        source (an imported file's sha256, or the fact that they are drawn under the rule already
        in the settings)."""
        d = self.model_dump(mode="json")
        d["decoder_weights"] = None  # recorded in the result's hyperparameters, outside the identity
        d.update(prompt_identity(unit.suite, unit.task_id, draw_key(self.prompt, list(self.prompt_classes or []), self.image_size, self.resize)))
        return d

    @model_validator(mode="after")
    def _decoder_width(self) -> "PromptEvalSettings":
        if self.decoder_dim % self.decoder_heads or self.decoder_dim % 8:
            raise ValueError(f"decoder_dim {self.decoder_dim} must be divisible by decoder_heads ({self.decoder_heads}) and by 8")
        return self

    def resolve(self, task: "TaskSpec") -> "PromptEvalSettings":
        k = task.num_classes
        cls = list(self.prompt_classes) if self.prompt_classes is not None else list(range(1, k))
        if not cls or any(not 0 < c < k for c in cls):
            raise ValueError(f"prompt_classes {cls} must name foreground classes 1..{k - 1} of the task's {k} classes")
        return self.model_copy(update={"prompt_classes": cls})


class _VolumeNorm(StrictModel):
    volume_norm: Literal["med3d", "percentile", "minmax"] = Field("med3d", description="volume intensities to 0-255: med3d (LVM-Med's MMWHS) | percentile | minmax")


class PromptEval3DSettings(PromptEvalSettings, _VolumeNorm):
    """``seg3d-prompt-zeroshot``: slice-wise, every slice of a volume prompted with its own box."""


class PromptSegSettings(PromptEvalSettings):
    """``seg2d-prompt``: the mask decoder (and a new neck) trained on box prompts (reference §1.4)."""

    lr: PosFloat = Field(1e-4, description="Adam learning rate (paper Table 7, prompt column)")
    epochs: PosInt = Field(20, description="training epochs; validation after each")
    batch_size: PosInt = Field(16, description="training minibatch")
    weight_decay: NonNegFloat = Field(0.0, description="Adam weight decay")
    betas: tuple[Fraction01, Fraction01] = Field((0.9, 0.999), description="Adam betas")
    amsgrad: Bool = Field(True, description="AMSGrad variant (LVM-Med's SAM scripts)")
    grad_clip: NonNegFloat | None = Field(1.0, description="gradient-norm clipping; 0 or none = off")
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")
    train_prompt_encoder: Bool = Field(False, description="train SAM's prompt encoder too (the paper: frozen)")
    select_metric: str | None = Field(None, description="validation metric that selects the epoch; default: dice")

    selectable = ("dice", "iou")
    fallback_select = "dice"

    @model_validator(mode="after")
    def _horizon(self) -> "PromptSegSettings":
        self.schedule.check_horizon(self.epochs)
        return self

    def resolve(self, task: "TaskSpec") -> "PromptSegSettings":
        base = super().resolve(task)
        explicit = self.select_metric
        if explicit is not None and explicit not in self.selectable:
            raise ValueError(choice_msg("select_metric", explicit, self.selectable))
        return base.model_copy(update={"select_metric": explicit or self.fallback_select})


class PromptSeg3DSettings(PromptSegSettings, _VolumeNorm):
    """``seg3d-prompt``: slice-wise training on every slice that shows the object."""

    selectable = ("iou3d_prompt", "dice_prompt")
    fallback_select = "iou3d_prompt"
