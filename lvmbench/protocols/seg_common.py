"""The base of the U-Net segmentation protocols (2D and slice-wise 3D): decode and cache the splits
and the out-of-distribution sets, train (``seg_train``), select on validation, score the test split
and every OOD set once with the selected checkpoint (``seg_scores``), state the baseline.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch

from lvmbench.data.cases import Case, DatasetReader
from lvmbench.heads.unet import UNet
from lvmbench.metrics.segmentation import slug
from lvmbench.protocols.base import (
    Protocol,
    ProtocolOutput,
    RunContext,
    seed_everything,
)
from lvmbench.protocols.clean_scoring import clean_conventions
from lvmbench.protocols.features import loader_workers
from lvmbench.protocols.resume import Resume
from lvmbench.protocols.seg_data import Prep, Prepared, prepare
from lvmbench.protocols.seg_scores import Scores, ood_summary, trivial_predictors
from lvmbench.protocols.seg_train import (
    build_model,
    on_device,
    runtime_hparams,
    shuffled_batches,
    train_model,
)
from lvmbench.protocols.selection import require_validation
from lvmbench.protocols.settings import SegSettings
from lvmbench.stats import higher_is_better


def make_prep(ctx: RunContext, hp: SegSettings) -> Prep:
    pre = ctx.task.preprocess
    # 2D protocols have no volume_norm: their images are never volumes
    return Prep(pre.size, pre.channels, pre.resize, hp.minmax, getattr(hp, "volume_norm", "med3d"))


def prepare_cases(ctx: RunContext, reader: DatasetReader, cases: list[Case], hp: SegSettings, *, native: bool, volumes: bool, desc: str) -> Prepared:
    return prepare(
        reader, cases, make_prep(ctx, hp), ctx.decoded_cache, native=native, volumes=volumes,
        workers=loader_workers(ctx), desc=desc, progress=ctx.progress,
    )


class SegProtocol(Protocol):
    """Train a U-Net on in-memory arrays, select on validation, score test and OOD sets once.

    Subclasses say how the data is sliced (``volumes``), which arrays are trained on, how a split is
    scored and which metric selects the checkpoint.
    """

    ood_keys: ClassVar[tuple[str, ...]] = ("dice",)

    def training_arrays(self, ctx: RunContext, hp: SegSettings, train: Prepared) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        """uint8 images (N, C, S, S), labels (N, S, S) and counts for the result."""
        raise NotImplementedError

    def evaluate(self, ctx: RunContext, model: UNet, prep: Prepared, hp: SegSettings, split: str, suffix: str = "", validation: bool = False) -> Scores:
        raise NotImplementedError

    def validation_score(self, ctx: RunContext, model: UNet, prep: Prepared, hp: SegSettings) -> float:
        """The selection metric on the validation split (no HD95, no native-size scores)."""
        return self.evaluate(ctx, model, prep, hp.model_copy(update={"hd95": False}), "val", validation=True)[0][str(hp.select_metric)]

    def baseline(self, ctx: RunContext, model: UNet, train: Prepared, test: Prepared, oods: list, hp: SegSettings) -> dict[str, Any]:
        """The task's primary metric of the best trivial mask (all background, all foreground, the
        training-set mean mask; ``seg_scores.trivial_predictors``) on the same test (and OOD) sets,
        through the same scorer: what a model that learned nothing can reach."""
        quick = hp.model_copy(update={"hd95": False, "nsd_tolerance_mm": None})  # the primary metric needs neither
        primary = ctx.task.primary_metric
        values: dict[str, float] = {}
        for name, null in trivial_predictors(model, ctx.task.num_classes, train.masks, list(hp.score_classes or [])).items():
            metrics = self.evaluate(ctx, null, test, quick, "test")[0]
            for o, prep in oods:
                metrics.update(self.evaluate(ctx, null, prep, quick, f"ood:{o.name}", f"_{slug(o.name)}")[0])
            metrics.update(ood_summary(metrics, [o.name for o, _ in oods], self.ood_keys))
            values[name] = float(metrics.get(primary, float("nan")))
        sign = 1.0 if higher_is_better(primary) else -1.0
        best = max(values, key=lambda k: (sign * values[k] if values[k] == values[k] else float("-inf"), -list(values).index(k)))
        return {"metric": primary, "value": values[best], "predictor": best, "candidates": values}

    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp: SegSettings = ctx.settings  # type: ignore[assignment]
        require_validation(ctx, ctx.data.split.val)
        gen = seed_everything(ctx.seed)
        # Built first, so its initialisation does not depend on how many loaders ran before it.
        model = build_model(ctx)
        t0 = time.perf_counter()
        splits = {"train": ctx.train_cases(), "val": ctx.data.split.val, "test": ctx.data.split.test}
        verb = "slice" if self.volumes else "decode"
        data = {s: prepare_cases(ctx, ctx.data.reader, cs, hp, native=s == "test", volumes=self.volumes, desc=f"{verb}:{s}") for s, cs in splits.items() if cs}
        oods = [(o.spec, prepare_cases(ctx, o.reader, o.cases, hp, native=True, volumes=self.volumes, desc=f"{verb}:{o.name}")) for o in ctx.data.ood]
        t_data = time.perf_counter() - t0

        x_tr, y_tr, train_counts = self.training_arrays(ctx, hp, data["train"])
        batches, n_batches = shuffled_batches(*on_device(ctx, x_tr, y_tr), hp.batch_size, gen, hflip=hp.augment, drop_last=hp.drop_last)
        validate = lambda: self.validation_score(ctx, model, data["val"], hp)  # noqa: E731
        t1 = time.perf_counter()
        chosen, history, train_timings = train_model(ctx, model, hp, batches, n_batches, validate, gen)
        t_train = time.perf_counter() - t1

        metrics, per_case, undefined = self.evaluate(ctx, model, data["test"], hp, "test")
        counts = {s: len(cs) for s, cs in splits.items()}
        counts.update(train_counts)
        for o, prep in oods:
            m, recs, und = self.evaluate(ctx, model, prep, hp, f"ood:{o.name}", f"_{slug(o.name)}")
            metrics.update(m)
            per_case += recs
            undefined.update(und)
            counts[f"ood:{o.name}"] = len(prep.cases)
        metrics.update(ood_summary(metrics, [o.name for o, _ in oods], self.ood_keys))
        baseline = self.baseline(ctx, model, data["train"], data["test"], oods, hp)
        Resume(ctx).clear()  # scored: a stop now would not train again
        used = {"selected": chosen, **runtime_hparams(ctx)}
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_case,
            hparams=used,
            counts=counts,
            extra={"val_history": history, "hd95_undefined": undefined, "ood_sets": [o.name for o, _ in oods], "baseline": baseline,
                   # the paper's per-image Dice/IoU score an empty ground truth predicted empty as 1 (eps rule)
                   "conventions": {"empty_policy": "one", "metric_definition": "paper-per-image-eps", **clean_conventions(hp, self.volumes)}},
            flags=["validation-undefined"] if chosen.get("validation_undefined") else [],
            timings={"data_s": t_data, "train_s": t_train, **train_timings, "total_s": time.perf_counter() - t0},
        )
