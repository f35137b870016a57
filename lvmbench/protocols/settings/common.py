"""Settings every protocol shares: schedules, input normalisation, heads, frozen-feature options,
and the one-line error for a bad setting."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from lvmbench.errors import UserError
from lvmbench.heads import HEADS
from lvmbench.kit import (
    Bool,
    Float,
    NonNegFloat,
    PosFloat,
    PosInt,
    StrictModel,
    choice_msg,
    first_problem,
)

if TYPE_CHECKING:
    from lvmbench.spec import TaskSpec


class Schedule(StrictModel):
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


class MeanStd(StrictModel):
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
DROP_LAST_DOC = (
    "drop the last partial batch of each epoch; false: every training image is seen every epoch "
    "(a last batch of one image joins the batch before it, for BatchNorm; lvmbench/data/batches.py)"
)


class ProtocolSettings(StrictModel):
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
                raise ValueError(choice_msg("select_metric", explicit, self.selectable))
            return explicit
        primary = task.primary_metric
        for cand in (primary, primary.removesuffix("_avg")):
            if cand in self.selectable:
                return cand
        assert self.fallback_select is not None
        return self.fallback_select


class HeadSettings(StrictModel):
    """``heads`` to run and their parameters."""

    heads: list[str] = Field(default_factory=lambda: ["linear"], min_length=1, description="heads run as separate units: linear | mlp | tversky | a plugin head")
    head_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per head: its constructor parameters, e.g. {mlp: {hidden: [512, 256]}}")

    @model_validator(mode="after")
    def _heads_known(self) -> "HeadSettings":
        for name in [*self.heads, *self.head_params]:
            if name not in HEAD_MODELS and name not in HEADS:  # built-in names without loading the heads (torch)
                raise ValueError(choice_msg("head", name, sorted(set(HEAD_MODELS) | set(HEADS.names()))))
        for name, params in self.head_params.items():
            check_head_params(name, params)
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads lists a head twice: {self.heads}")
        return self


def check_head_params(name: str, params: dict[str, Any]) -> None:
    """Unknown head parameters are errors: the head's own settings model when it has one, else its
    constructor's named parameters (a ``**kwargs`` catch-all would swallow typos)."""
    model = HEAD_MODELS.get(name)
    if model is None:
        factory = HEADS.get(name)
        model = getattr(factory, "settings_model", None)
    if model is not None:
        model.model_validate(params)
        return
    sig = inspect.signature(factory)
    names = [p for p, v in sig.parameters.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)][2:]
    for key in params:
        if key not in names:
            raise ValueError(choice_msg(f"parameter of head '{name}'", key, names))


class LinearHeadParams(StrictModel):
    pass


class MLPHeadParams(StrictModel):
    hidden: list[PosInt] = Field(default_factory=lambda: [512, 256], description="hidden layer widths")
    dropout: Float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")


class TverskyHeadParams(StrictModel):
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


HEAD_MODELS: dict[str, type[StrictModel]] = {"linear": LinearHeadParams, "mlp": MLPHeadParams, "tversky": TverskyHeadParams}

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "auc")


class FeatureSettings(ProtocolSettings):
    """Frozen-encoder protocols read cached features."""

    bn_mode: BnMode = Field("eval", description="eval: BatchNorm statistics as trained | adapt: re-estimated on the training images first")
    feature_batch_size: PosInt = Field(64, description="images per forward pass when extracting features")


TRANSFORMER_BLOCK = "transformer"  # protocols.<name>.transformer: settings for transformer encoders


def settings_error(err: ValidationError, model: type[BaseModel], where: str, task_id: str, path: Any) -> UserError:
    """The first problem of a validation error as one line: task, key, value, nearest valid name."""
    p = first_problem(err, model, extra_keys=(TRANSFORMER_BLOCK,))
    full = f"{where}.{p.key}" if p.key else where
    if p.kind == "unknown":
        msg = f"task '{task_id}': unknown setting '{full}'" + (f"; did you mean '{p.hint}'?" if p.hint else "")
        fix = f"valid keys: {', '.join(p.valid)} (see `lvmbench protocols`)" if p.valid else "see `lvmbench protocols`"
        return UserError(msg, path=path, fix=fix)
    return UserError(f"task '{task_id}': bad setting '{full}': {p.text}{p.shown}", path=path, fix="correct it in task.yaml (see `lvmbench protocols`)")
