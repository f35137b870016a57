"""Typed protocol settings: every key a task.yaml may set under ``protocols.<name>``.

Each protocol declares one pydantic model (type, range, default, one-line doc per key). A task's
``protocols`` section, and every suite profile merged into it, is validated against the model when
the task is loaded, so a typo (``epoch: 3``) or a bad value (``batch_size: 0``) is an error naming the
task, the key and the nearest valid name, never a silently ignored setting. ``resolve`` fills the
defaults that depend on the task (the selection metric, the scored classes), and the resolved model,
defaults included, is what a protocol reads and what its result records.

Shared pieces that published recipes need: learning-rate schedules (:class:`Schedule`), input
normalisation (:data:`Normalize`), augmentation on/off, and the validation metric that selects the
checkpoint (``select_metric``, default: the task's primary metric).
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, ValidationError, field_validator, model_validator

from lvmbench.data.prompts.rules import PromptRule, legacy_prompt_keys
from lvmbench.errors import UserError
from lvmbench.registry import suggest

if TYPE_CHECKING:
    from lvmbench.spec import TaskSpec

# Strict scalars: text is not a number ('fast', a quoted "0.001"), a bool is not a number, 1.5 is not
# an integer and "yes" is not a bool; lists still become tuples where a pair is expected.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Bool = StrictBool
PosInt = Annotated[int, Strict(), Field(gt=0)]
PosFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Fraction01 = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Schedule(_Model):
    """Learning-rate schedule, applied per optimisation step; ``epochs`` of the protocol is the horizon.

    ``constant`` (LVM-Med's recipes), ``step`` (multiply by ``gamma`` at each epoch of ``milestones``),
    ``cosine`` (half-cosine from the base rate to ``min_lr_factor`` x base). ``warmup_epochs`` ramps
    linearly from ``warmup_start_factor`` x base first (any kind). YAML shorthand: ``schedule: cosine``.
    """

    kind: Literal["constant", "step", "cosine"] = Field("constant", description="constant | step | cosine")
    milestones: list[PosInt] = Field(default_factory=list, description="step: epochs after which the rate is multiplied by gamma")
    gamma: Float = Field(0.1, gt=0, le=1, description="step: multiplier at each milestone")
    warmup_epochs: Float = Field(0.0, ge=0, description="linear warm-up length in epochs (fractions allowed)")
    warmup_start_factor: Float = Field(0.001, gt=0, le=1, description="warm-up starts at this fraction of the rate")
    min_lr_factor: Float = Field(0.0, ge=0, le=1, description="cosine: final rate as a fraction of the base rate")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> "Schedule":
        if self.kind == "step" and not self.milestones:
            raise ValueError("a step schedule needs milestones (epochs), e.g. milestones: [20, 30]")
        if self.kind != "step" and self.milestones:
            raise ValueError(f"milestones apply to kind: step, not '{self.kind}'")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError("milestones must be increasing and distinct")
        return self

    def check_horizon(self, epochs: int) -> None:
        if self.milestones and self.milestones[-1] >= epochs:
            raise ValueError(f"schedule milestone {self.milestones[-1]} is not before the last epoch ({epochs})")
        if self.warmup_epochs >= epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs {self.warmup_epochs:g} must be shorter than epochs ({epochs})")


class MeanStd(_Model):
    """Explicit normalisation: ``(x / 255 - mean) / std`` (``pixel_range: unit``) or ``(x - mean) / std`` (``raw255``)."""

    mean: list[Float] = Field(min_length=1, max_length=3, description="per channel (1 value = all channels)")
    std: list[PosFloat] = Field(min_length=1, max_length=3, description="per channel, > 0")
    pixel_range: Literal["unit", "raw255"] = Field("unit", description="unit: mean/std apply to pixels scaled to [0, 1]; raw255: to 0-255")

    @model_validator(mode="after")
    def _same_length(self) -> "MeanStd":
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std need the same number of channels")
        return self


NormalizeName = Literal["encoder", "imagenet", "raw255", "unit"]
Normalize = NormalizeName | MeanStd | None
NORMALIZE_DOC = (
    "input normalisation: encoder (its own mean/std) | imagenet | raw255 (0-255, none) | unit ([0, 1]) | "
    "{mean: [...], std: [...]}; default: the task's preprocess.intensity"
)
BnMode = Literal["eval", "adapt"]


class ProtocolSettings(_Model):
    """Keys every protocol accepts."""

    normalize: Normalize = Field(None, description=NORMALIZE_DOC)

    # Metrics a protocol can compute on the validation split (for ``select_metric``); () = no selection.
    selectable: ClassVar[tuple[str, ...]] = ()
    fallback_select: ClassVar[str | None] = None

    def resolve(self, task: "TaskSpec") -> "ProtocolSettings":
        """The settings with task-dependent defaults filled (a new object)."""
        return self

    def select_for(self, task: "TaskSpec", explicit: str | None) -> str:
        """The validation metric that selects: explicit, else the task's primary metric when this
        protocol computes it on validation, else the in-distribution part of an OOD average
        (``dice_avg`` -> ``dice``), else the protocol's own default."""
        if explicit is not None:
            if explicit not in self.selectable:
                raise ValueError(_choice_msg("select_metric", explicit, self.selectable))
            return explicit
        primary = task.primary_metric
        for cand in (primary, primary.removesuffix("_avg")):
            if cand in self.selectable:
                return cand
        assert self.fallback_select is not None
        return self.fallback_select


class HeadSettings(_Model):
    """``heads`` to run and their parameters."""

    heads: list[str] = Field(default_factory=lambda: ["linear"], min_length=1, description="heads run as separate units: linear | mlp | tversky | a plugin head")
    head_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per head: its constructor parameters, e.g. {mlp: {hidden: [512, 256]}}")

    @model_validator(mode="after")
    def _heads_known(self) -> "HeadSettings":
        from lvmbench.heads import HEADS

        for name in [*self.heads, *self.head_params]:
            if name not in HEADS:
                raise ValueError(_choice_msg("head", name, HEADS.names()))
        for name, params in self.head_params.items():
            check_head_params(name, params)
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads lists a head twice: {self.heads}")
        return self


def check_head_params(name: str, params: dict[str, Any]) -> None:
    """Unknown head parameters are errors: the head's own settings model when it has one, else its
    constructor's named parameters (a ``**kwargs`` catch-all would swallow typos)."""
    from lvmbench.heads import HEADS

    factory = HEADS.get(name)
    model = getattr(factory, "settings_model", None) or HEAD_MODELS.get(name)
    if model is not None:
        model.model_validate(params)
        return
    sig = inspect.signature(factory)
    names = [p for p, v in sig.parameters.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)][2:]
    for key in params:
        if key not in names:
            raise ValueError(_choice_msg(f"parameter of head '{name}'", key, names))


class LinearHeadParams(_Model):
    pass


class MLPHeadParams(_Model):
    hidden: list[PosInt] = Field(default_factory=lambda: [512, 256], description="hidden layer widths")
    dropout: Float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")


class TverskyHeadParams(_Model):
    """lvmbench/heads/tversky.py:TverskyProjection (Doumbouya et al.)."""

    fbank_size: PosInt = Field(224, description="learned features in the bank")
    similarity_model: Literal["contrast", "ratio"] = Field("contrast", description="Tversky's contrast or ratio model")
    intersection_reduction: Literal["product", "min", "max", "mean", "gmean", "softmin"] = Field("product", description="per-feature intersection measure")
    difference_reduction: Literal["ignorematch", "substractmatch"] = Field("ignorematch", description="difference measure")
    normalize: Bool = Field(False, description="L2-normalise inputs and prototypes")
    input_norm: Literal["layernorm", "batchnorm", "none"] = Field("layernorm", description="normalisation of the head's input")
    logit_scale: PosFloat = Field(1.0, description="multiplier of the logits")
    learnable_scale: Bool = Field(False, description="learn the logit scale")
    softmin_temperature: PosFloat = Field(1.0, description="softmin intersection temperature")
    ratio_smoothing: NonNegFloat = Field(1.0, description="ratio model denominator constant")


HEAD_MODELS: dict[str, type[_Model]] = {"linear": LinearHeadParams, "mlp": MLPHeadParams, "tversky": TverskyHeadParams}

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "auc")


class FeatureSettings(ProtocolSettings):
    """Frozen-encoder protocols read cached features."""

    bn_mode: BnMode = Field("eval", description="eval: BatchNorm statistics as trained | adapt: re-estimated on the training images first")
    feature_batch_size: PosInt = Field(64, description="images per forward pass when extracting features")


class LinearSettings(FeatureSettings, HeadSettings):
    lrs: list[PosFloat] = Field(default_factory=lambda: [1e-3], min_length=1, description="learning rates trained side by side; the best on validation is kept")
    epochs: PosInt = Field(20, description="passes over the training features")
    batch_size: PosInt = Field(64, description="training minibatch")
    weight_decay: NonNegFloat = Field(0.0, description="Adam weight decay")
    standardize: Bool = Field(True, description="centre and scale features with training statistics")
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule (see Schedule)")
    select_metric: str | None = Field(None, description="validation metric that selects (lr, epoch); default: the task's primary metric")

    selectable = CLASSIFICATION_METRICS
    fallback_select = "accuracy"

    @model_validator(mode="after")
    def _horizon(self) -> "LinearSettings":
        self.schedule.check_horizon(self.epochs)
        return self

    def resolve(self, task: "TaskSpec") -> "LinearSettings":
        return self.model_copy(update={"select_metric": self.select_for(task, self.select_metric)})


class KNNSettings(FeatureSettings):
    ks: list[PosInt] = Field(default_factory=lambda: [10, 20, 50], min_length=1, description="neighbour counts; the best on validation is kept")
    temperature: PosFloat = Field(0.07, description="vote weight exp(similarity / temperature)")
    center: Bool = Field(True, description="subtract the training features' mean before the L2 normalisation (SimpleShot's CL2N); false = plain cosine (DINO)")
    select_metric: str | None = Field(None, description="validation metric that selects k; default: the task's primary metric")

    selectable = CLASSIFICATION_METRICS
    fallback_select = "accuracy"

    def resolve(self, task: "TaskSpec") -> "KNNSettings":
        return self.model_copy(update={"select_metric": self.select_for(task, self.select_metric)})


class FinetuneSettings(ProtocolSettings, HeadSettings):
    lr: PosFloat = Field(1e-4, description="Adam learning rate")
    epochs: PosInt = Field(30, description="training epochs; validation after each")
    batch_size: PosInt = Field(32, description="training minibatch")
    eval_batch_size: PosInt | None = Field(None, description="validation/test batch; default max(batch_size, 64)")
    weight_decay: NonNegFloat = Field(0.0, description="Adam weight decay")
    grad_clip: PosFloat | None = Field(None, description="gradient-norm clipping; none = off")
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")
    augment: Bool = Field(True, description="training augmentation (random crop when crop is set, horizontal flip when hflip); off = centre crop only")
    crop: PosInt | None = Field(None, description="crop side (random in training, centre at test); none = the whole image")
    hflip: Bool = Field(True, description="random horizontal flips in training (with augment)")
    paper_random_test_crop: Bool = Field(False, description="LVM-Med's FGADR flaw: random crops on the test images too (result flagged)")
    objective: Literal["ce", "ms", "triplet"] = Field("ce", description="ce (logits) | ms (multi-similarity) | triplet (symmetric, SIRL); ms/triplet predict by kNN")
    embedding_dim: PosInt = Field(128, description="ms/triplet: embedding width of the head")
    pk: tuple[PosInt, PosInt] | None = Field(None, description="ms/triplet: P classes x K images per batch; default [batch_size // 4, 4]")
    knn_k: PosInt = Field(10, description="ms/triplet: neighbours of the kNN prediction")
    knn_temperature: PosFloat = Field(0.07, description="ms/triplet: kNN vote temperature")
    ms_preset: Literal["paper", "official", "pml"] = Field("pml", description="ms: parameter preset")
    ms_alpha: PosFloat | None = Field(None, description="ms: override alpha")
    ms_beta: PosFloat | None = Field(None, description="ms: override beta")
    ms_lambda: Float | None = Field(None, description="ms: override lambda")
    ms_epsilon: NonNegFloat | None = Field(None, description="ms: override the miner's epsilon")
    triplet_margin: NonNegFloat = Field(0.1, description="triplet: margin")
    select_metric: str | None = Field(None, description="validation metric that selects the epoch; default: the task's primary metric")

    selectable = CLASSIFICATION_METRICS
    fallback_select = "accuracy"

    @model_validator(mode="after")
    def _consistent(self) -> "FinetuneSettings":
        self.schedule.check_horizon(self.epochs)
        ms_keys = [k for k in ("ms_alpha", "ms_beta", "ms_lambda", "ms_epsilon") if getattr(self, k) is not None]
        if self.objective != "ms" and ms_keys:
            raise ValueError(f"{', '.join(ms_keys)} apply to objective: ms, not '{self.objective}'")
        if self.objective == "ce" and self.pk is not None:
            raise ValueError("pk applies to objective ms or triplet, not 'ce'")
        return self

    def resolve(self, task: "TaskSpec") -> "FinetuneSettings":
        return self.model_copy(update={
            "select_metric": self.select_for(task, self.select_metric),
            "eval_batch_size": self.eval_batch_size or max(self.batch_size, 64),
        })


class SegSettings(ProtocolSettings):
    lr: PosFloat = Field(1e-3, description="Adam learning rate")
    epochs: PosInt = Field(30, description="training epochs; validation after each")
    batch_size: PosInt = Field(16, description="training minibatch (images or slices)")
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


class PromptEvalSettings(ProtocolSettings):
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
        """What a result's identity holds of these settings (lvmbench.identity): see
        lvmbench.protocols.prompt_sets.identity_view (decoder sha256 not path; prompt source)."""
        from lvmbench.protocols.prompt_sets import identity_view

        return identity_view(self, unit)

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


class _VolumeNorm(_Model):
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
            raise ValueError(_choice_msg("select_metric", explicit, self.selectable))
        return base.model_copy(update={"select_metric": explicit or self.fallback_select})


class PromptSeg3DSettings(PromptSegSettings, _VolumeNorm):
    """``seg3d-prompt``: slice-wise training on every slice that shows the object."""

    selectable = ("iou3d_prompt", "dice_prompt")
    fallback_select = "iou3d_prompt"


class DetectionSettings(ProtocolSettings):
    backend: str = Field("torchvision", description="torchvision | mmdet")
    lr: PosFloat = Field(1e-4, description="Adam learning rate")
    weight_decay: NonNegFloat = Field(1e-4, description="Adam weight decay")
    epochs: PosInt = Field(40, description="training epochs")
    batch_size: PosInt = Field(8, description="images per step")
    grad_clip: PosFloat | None = Field(None, description="gradient-norm clipping; none = off")
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")
    augment: Bool = Field(True, description="training augmentation (horizontal flips when hflip)")
    hflip: Bool = Field(True, description="random horizontal flips (with augment)")
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

    @field_validator("backend")
    @classmethod
    def _backend_known(cls, v: str) -> str:
        from lvmbench.protocols.det import BACKENDS

        if v not in BACKENDS:
            raise ValueError(_choice_msg("backend", v, BACKENDS.names()))
        return v

    @model_validator(mode="after")
    def _horizon(self) -> "DetectionSettings":
        self.schedule.check_horizon(self.epochs)
        return self

    def resolve(self, task: "TaskSpec") -> "DetectionSettings":
        return self.model_copy(update={"select_metric": self.select_for(task, self.select_metric)})


class RetrievalSettings(FeatureSettings):
    ks: list[PosInt] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1, description="Recall@K cut-offs")
    train_head: Bool = Field(False, description="also train a multi-similarity projection head (selected on validation Recall@1)")
    head_dim: PosInt = Field(128, description="head: embedding width")
    head_epochs: PosInt = Field(20, description="head: training epochs")
    head_lr: PosFloat = Field(1e-3, description="head: Adam learning rate")
    head_weight_decay: NonNegFloat = Field(0.0, description="head: Adam weight decay")
    pk: tuple[PosInt, PosInt] = Field((8, 4), description="head: P classes x K images per batch")
    ms_preset: Literal["paper", "official", "pml"] = Field("pml", description="head: multi-similarity preset")


class SimilarityQuerySettings(FeatureSettings):
    similarity: Literal["same_label", "grade_distance"] = Field("same_label", description="reference similarity: same_label | grade_distance (ordinal grades)")
    triplets: PosInt = Field(20000, description="queries sampled per score")
    delta: NonNegFloat = Field(1e-9, description="minimum reference margin of a kept query")
    bootstrap: Int = Field(1000, ge=100, description="bootstrap resamples of the 95% CIs")
    triplet_seed: Int = Field(0, ge=0, description="seed of query sampling (the same queries for every encoder)")


# --- errors ------------------------------------------------------------------------------------------


def _choice_msg(what: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    hint = suggest(str(value), list(choices))
    return f"unknown {what} '{value}'" + (f"; did you mean '{hint}'?" if hint else f"; valid: {', '.join(choices)}")


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def settings_error(err: ValidationError, model: type[BaseModel], where: str, task_id: str, path: Any) -> UserError:
    """The first problem of a validation error as one line: task, key, value, nearest valid name."""
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    key = _where(loc)
    full = f"{where}.{key}" if key else where
    if first["type"] == "extra_forbidden":
        parent = model_at(model, loc[:-1])
        valid = sorted(parent.model_fields) if parent is not None else []
        if len(loc) == 1 and valid:
            valid = sorted([*valid, "transformer"])  # the per-kind block (protocols.base.resolve_settings)
        hint = suggest(str(loc[-1]), valid) if valid else None
        msg = f"task '{task_id}': unknown setting '{full}'" + (f"; did you mean '{hint}'?" if hint else "")
        fix = f"valid keys: {', '.join(valid)} (see `lvmbench protocols`)" if valid else "see `lvmbench protocols`"
        return UserError(msg, path=path, fix=fix)
    text = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    if first["type"] == "literal_error" and isinstance(value, str):
        choices = re.findall(r"'([^']*)'", str(first.get("ctx", {}).get("expected", "")))
        hint = suggest(value, choices)
        if hint:
            text += f"; did you mean '{hint}'?"
    shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
    return UserError(f"task '{task_id}': bad setting '{full}': {text}{shown}", path=path, fix="correct it in task.yaml (see `lvmbench protocols`)")


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The nested model at ``loc`` of a validation error (for the valid keys of an unknown-key
    error); also used for reader options."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the item's model is the list's
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return current if isinstance(current, type) and issubclass(current, BaseModel) else None
        ann = fields[part].annotation
        current = next((a for a in _flatten(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return current


def _flatten(ann: Any) -> list[Any]:
    args = getattr(ann, "__args__", None)
    if not args:
        return [ann]
    out = []
    for a in args:
        out += _flatten(a)
    return out
