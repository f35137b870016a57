"""Settings of the classification protocols: linear probe, kNN, fine-tuning, retrieval, similarity queries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from lvmbench.kit import Bool, Float, Fraction01, Int, NonNegFloat, PosFloat, PosInt
from lvmbench.protocols.settings.common import (
    CLASSIFICATION_METRICS,
    DROP_LAST_DOC,
    FeatureSettings,
    HeadSettings,
    ProtocolSettings,
    Schedule,
)

if TYPE_CHECKING:
    from lvmbench.spec import TaskSpec

class LinearSettings(FeatureSettings, HeadSettings):
    lrs: list[PosFloat] = Field(default_factory=lambda: [1e-3], min_length=1, description="learning rates trained side by side; the best on validation is kept")
    epochs: PosInt = Field(20, description="passes over the training features")
    batch_size: PosInt = Field(64, description="training minibatch")
    drop_last: Bool = Field(False, description=DROP_LAST_DOC)
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
    drop_last: Bool = Field(False, description=DROP_LAST_DOC + " (objective ce; ms/triplet batches are always full: resolved to false)")
    eval_batch_size: PosInt | None = Field(None, description="validation/test batch; default max(batch_size, 64)")
    weight_decay: NonNegFloat = Field(0.0, description="Adam weight decay")
    grad_clip: PosFloat | None = Field(None, description="gradient-norm clipping; none = off")
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")
    augment: Bool = Field(False, description="training augmentation: random crop (when crop is set), horizontal flips (hflip), autocontrast; off = centre crop only. Resolved to false when it would change nothing")
    crop: PosInt | None = Field(None, description="crop side (random in training with augment, else centre; centre at test); none = the whole image")
    hflip: Bool = Field(True, description="random horizontal flips in training (with augment; resolved to false without it)")
    autocontrast: Fraction01 = Field(0.0, description="probability of torchvision's RandomAutocontrast per training image (FGADR's recipe: 0.2; with augment; resolved to 0 without it)")
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
        # recorded settings show what took effect: an inert key takes its "off" value
        augment = self.augment and (self.crop is not None or self.hflip or self.autocontrast > 0)
        return self.model_copy(update={
            "select_metric": self.select_for(task, self.select_metric),
            "eval_batch_size": self.eval_batch_size or max(self.batch_size, 64),
            "augment": augment,
            "hflip": self.hflip and augment,
            "autocontrast": self.autocontrast if augment else 0.0,
            "drop_last": self.drop_last and self.objective == "ce",
        })


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
