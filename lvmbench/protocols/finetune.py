"""Full fine-tuning of encoder + head for classification, validation-selected.

The test transform is deterministic (resize, centre crop when ``crop`` is set). LVM-Med applied its
random training crop to the FGADR *test* images too (reference §1.4); that is reproduced only with
``paper_random_test_crop: true`` and the result is flagged.

``objective: ce`` (default) trains head logits with cross-entropy. ``objective: ms`` (multi-similarity
loss + miner) or ``triplet`` (symmetric triplet loss, SIRL) instead train the head as an
``embedding_dim`` projection on P×K class-balanced batches (``pk: [P, K]``); predictions (validation
and test) are then the kNN vote of the embeddings against the training images' (``knn_k``,
``knn_temperature``), as in the kNN protocol.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import autocontrast
from tqdm.auto import tqdm

from lvmbench.data.batches import ShuffledBatches
from lvmbench.data.cases import Case
from lvmbench.data.samplers import PKBatchSampler
from lvmbench.data.transforms import normalize_batch
from lvmbench.heads import HEADS
from lvmbench.losses import metric_objective
from lvmbench.protocols import declared
from lvmbench.protocols.base import (
    PROTOCOLS,
    Protocol,
    ProtocolOutput,
    RunContext,
    seed_everything,
)
from lvmbench.protocols.classification_common import (
    counts,
    labels_of,
    per_case_records,
    prior_baseline,
    score,
)
from lvmbench.protocols.epoch_log import epoch_line
from lvmbench.protocols.features import (
    autocast,
    image_dataset,
    loader_workers,
    model_layout,
)
from lvmbench.protocols.knn import knn_predict
from lvmbench.protocols.resume import Resume
from lvmbench.protocols.schedule import adam, make_scheduler, optimiser_step
from lvmbench.protocols.selection import (
    BestOnValidation,
    FiniteLoss,
    require_validation,
)
from lvmbench.protocols.settings import FinetuneSettings


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(x))


def augment(x: torch.Tensor, crop: int | None, hflip: bool, train: bool, gen: torch.Generator, autocontrast_p: float = 0.0) -> torch.Tensor:
    """Batch augmentation on device. Train: random crop + flip + autocontrast (torchvision's
    RandomAutocontrast, per image with probability ``autocontrast_p``); eval: centre crop only."""
    if crop and crop < x.shape[-1]:
        h, w = x.shape[-2:]
        if train:
            top = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
        else:
            top, left = (h - crop) // 2, (w - crop) // 2
        x = x[..., top : top + crop, left : left + crop]
    if train and hflip:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if train and autocontrast_p > 0:
        pick = torch.rand(x.shape[0], generator=gen) < autocontrast_p
        x = torch.where(pick.view(-1, 1, 1, 1).to(x.device), autocontrast(x), x)
    return x


@PROTOCOLS.register("finetune")
class FineTune(declared.Finetune, Protocol):
    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp: FinetuneSettings = ctx.settings  # type: ignore[assignment]
        head_name = ctx.unit.head
        head_hp = dict(hp.head_params.get(head_name, {}))
        batch_size, crop, objective = hp.batch_size, hp.crop, hp.objective
        hflip = hp.hflip  # resolved: false without augment (FinetuneSettings.resolve)
        random_train_crop = hp.augment  # off: the centre crop in training too
        amp = ctx.run.amp
        primary = str(hp.select_metric)
        n_cls = ctx.task.num_classes
        require_validation(ctx, ctx.data.split.val)
        gen = seed_everything(ctx.seed)
        splits = {"train": ctx.train_cases(), "val": ctx.data.split.val, "test": ctx.data.split.test}
        t0 = time.perf_counter()

        objective_hp: dict[str, Any] = {}
        y_train = labels_of(splits["train"])
        encoder = ctx.make_encoder()
        out_dim = n_cls if objective == "ce" else hp.embedding_dim
        head = HEADS.get(head_name)(encoder.embed_dim, out_dim, **head_hp)
        model = Classifier(encoder, head).to(ctx.device)
        if ctx.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        compiled = ctx.run.compile
        if compiled:
            model.compile()  # in place: state_dict keys stay those of the plain model
        opt = adam(model.parameters(), ctx.device, lr=hp.lr, weight_decay=hp.weight_decay)
        if objective == "ce":
            loss_fn: nn.Module = nn.CrossEntropyLoss()
        else:
            loss_fn, objective_hp = metric_objective(objective, hp.model_dump())
        norm = ctx.input_norm(encoder.input_spec)
        train_ds = image_dataset(ctx, splits["train"])
        loader_gen = torch.Generator().manual_seed(ctx.seed)  # the shuffle order; saved with a resume checkpoint
        sampler = None
        if objective == "ce":  # every image each epoch unless drop_last (lvmbench/data/batches.py)
            dl = DataLoader(
                train_ds,
                batch_sampler=ShuffledBatches(len(train_ds), batch_size, hp.drop_last, loader_gen),
                num_workers=loader_workers(ctx),
                pin_memory=ctx.device.type == "cuda",
                persistent_workers=loader_workers(ctx) > 0,
                generator=loader_gen,
            )
        else:
            p, k = hp.pk or (max(1, batch_size // 4), 4)
            sampler = PKBatchSampler(y_train, p, k, seed=ctx.seed)
            objective_hp.update({"P": sampler.p, "K": k})
            dl = DataLoader(train_ds, batch_sampler=sampler, num_workers=loader_workers(ctx), pin_memory=ctx.device.type == "cuda", persistent_workers=loader_workers(ctx) > 0)
        sched = make_scheduler(opt, hp.schedule, hp.epochs, len(dl))
        guard = FiniteLoss("fine-tuning")

        eval_loaders: dict[int, DataLoader] = {}  # one per case list: workers start once, not every epoch

        def outputs(cases: list[Case], random_crop: bool = False) -> torch.Tensor:
            model.eval()
            if id(cases) not in eval_loaders:
                workers = loader_workers(ctx)
                eval_loaders[id(cases)] = DataLoader(
                    image_dataset(ctx, cases), batch_size=int(hp.eval_batch_size or 64), num_workers=workers,
                    pin_memory=ctx.device.type == "cuda", persistent_workers=workers > 0,
                )
            out = []
            with torch.inference_mode():
                for x, _, _ in eval_loaders[id(cases)]:
                    x = augment(x.to(ctx.device, non_blocking=True), crop, False, random_crop, gen)
                    with autocast(ctx.device, amp):
                        out.append(model(model_layout(normalize_batch(x, norm))).float().cpu())
            return torch.cat(out)

        def predict(cases: list[Case], random_crop: bool = False) -> np.ndarray:
            out = outputs(cases, random_crop)
            if objective == "ce":
                return torch.softmax(out, 1).numpy()
            ref = outputs(splits["train"])
            return knn_predict(ref, torch.from_numpy(y_train), out, hp.knn_k, n_cls, hp.knn_temperature)

        selector = BestOnValidation()
        data_wait = loop_s = val_s = 0.0
        steps = images = 0
        resume = Resume(ctx)
        saved, history, first = resume.restore_run(model, opt, sched, selector)
        if saved is not None:
            data_wait, loop_s, val_s, steps, images = saved["timings"]
            steps, images = int(steps), int(images)
            gen.set_state(saved["gen"])
            loader_gen.set_state(saved["loader_gen"])
            if sampler is not None:
                sampler.epoch = int(saved["sampler_epoch"])
        for epoch in range(first, hp.epochs + 1):
            model.train()
            t_loop = t_wait = time.perf_counter()
            lr_first: float | None = None  # the rates of the epoch's first and last steps
            for x, y, _ in tqdm(dl, desc=f"finetune e{epoch}", disable=not ctx.progress, leave=False):
                data_wait += time.perf_counter() - t_wait
                steps += 1
                images += len(x)
                x = augment(x.to(ctx.device, non_blocking=True), crop, hflip, random_train_crop, gen, hp.autocontrast)
                y = y.to(ctx.device, non_blocking=True)
                with autocast(ctx.device, amp):
                    loss = loss_fn(model(model_layout(normalize_batch(x, norm))).float(), y)
                guard.check(loss, epoch)
                lr_last = optimiser_step(loss, opt, sched, model.parameters(), hp.grad_clip)
                lr_first = lr_last if lr_first is None else lr_first
                t_wait = time.perf_counter()
            guard.end_epoch(epoch)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)  # the loop's time includes its queued GPU work
            t_val = time.perf_counter()
            loop_s += t_val - t_loop
            val = score(splits["val"], predict(splits["val"]), n_cls)[primary]
            val_s += time.perf_counter() - t_val
            history.append({"epoch": epoch, "val": val, "loss": float(loss.detach()), "lr": lr_first, "lr_last": lr_last})
            epoch_line(ctx, epoch, hp.epochs, t_loop, loss=history[-1]["loss"], **{f"val_{primary}": val})
            selector.offer(val, lambda: copy.deepcopy(model.state_dict()), {"epoch": epoch, "val_primary": val})
            if epoch < hp.epochs:
                resume.save_if_due(model, opt, sched, {
                    "epoch": epoch, "history": history, **selector.state_dict(), "timings": [data_wait, loop_s, val_s, steps, images], "gen": gen.get_state(),
                    "loader_gen": loader_gen.get_state(), "sampler_epoch": sampler.epoch if sampler is not None else 0, "rng": torch.get_rng_state(),
                })
        best_state, chosen = selector.result("fine-tuning")
        model.load_state_dict(best_state)
        prob = predict(splits["test"], random_crop=hp.paper_random_test_crop)
        resume.clear()  # scored: a stop now would not train again
        flags = ["paper-random-test-crop"] if hp.paper_random_test_crop else []
        flags += ["validation-undefined"] if chosen.get("validation_undefined") else []
        used: dict[str, Any] = {"head": head_name, "head_params": head_hp, "selected": chosen, "amp": amp, "compile": compiled, **objective_hp}
        return ProtocolOutput(
            metrics=score(splits["test"], prob, n_cls),
            per_case=per_case_records(splits["test"], prob),
            hparams=used,
            counts=counts(splits),
            extra={"val_history": history, "baseline": prior_baseline(splits["train"], splits["test"], n_cls, ctx.task.primary_metric)},
            flags=flags,
            timings={
                "total_s": time.perf_counter() - t0,
                "data_wait_s": data_wait,
                "train_loop_s": loop_s,  # training steps, data waits included, validation excluded
                "val_s": val_s,
                "train_steps": float(steps),
                "train_images": float(images),
            },
        )
