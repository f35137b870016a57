"""Frozen-encoder features, computed once per (weights, data, transform, BN mode) and cached.

LVM-Med's "linear evaluation" keeps the encoder in ``train()`` mode, so BatchNorm statistics drift
towards the task's training images (reference §1.3). Features computed with per-batch statistics
cannot be cached faithfully, so the choice is explicit: ``bn_mode: eval`` (default, standard
linear probing) or ``bn_mode: adapt`` (re-estimate BN statistics on the training images once, then
extract in eval mode — the cache-friendly equivalent of the paper's drift).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import time
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lvmbench.data.cache import ArrayCache, cache_key, content_stamp
from lvmbench.data.cases import Case
from lvmbench.data.datasets import ImageDataset
from lvmbench.data.transforms import normalize_batch
from lvmbench.encoders import RANDOM_INIT
from lvmbench.encoders.base import Encoder
from lvmbench.interrupt import interruptible
from lvmbench.protocols.base import RunContext


def loader_workers(ctx: RunContext) -> int:
    """The unit's data-loader workers (``RunContext.workers``)."""
    return ctx.workers


def model_layout(x: torch.Tensor) -> torch.Tensor:
    """A 4-D image batch in channels-last memory order: oneDNN (CPU) and cuDNN (GPU, with
    channels-last weights) run convolutions faster on it; a batch collated from CxHxW tensors is
    NCHW-contiguous. Measured on CPU: ResNet-18 ``embed`` 1.4x faster, training steps ~7% faster."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def image_dataset(ctx: RunContext, cases: list[Case]) -> ImageDataset:
    pre = ctx.task.preprocess
    return ImageDataset(ctx.data.reader, cases, pre.size, pre.channels, pre.resize, ctx.decoded_cache)


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# Bump when the embed path changes (normalisation, memory layout, pooling, autocast, BN
# adaptation): every cached feature array then becomes stale and is recomputed.
EMBED_VERSION = 1


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    """The libraries that define the architectures: a new release can change a model's features."""
    out = {}
    for name in ("timm", "torchvision"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _size_mtime(path, rel: str = "") -> list:
    """``[rel, size, mtime_ns, content stamp]`` (the key holds the file's path relative to the
    data root, not its resolved path) without resolving the path: one ``stat`` instead of a
    ``realpath`` walk, for every file of every split of every unit; the content stamp is
    remembered per process (``lvmbench.data.cache.content_stamp``)."""
    st = os.stat(path)
    return [rel, st.st_size, st.st_mtime_ns, content_stamp(path, st)]


def _case_stamps(root, cases: list[Case]) -> list[list]:
    return [[c.id, *(_size_mtime(root / f, f) for f in (c.files or (c.image,)))] for c in cases]


def feature_key(ctx: RunContext, cases: list[Case], bn_mode: str) -> str:
    ident = ctx.encoder_identity
    pre = ctx.task.preprocess
    stamps = _case_stamps(ctx.data.root, cases)
    # bn_mode adapt re-estimates BatchNorm statistics on the whole training split (split_features):
    # its cases move the features of every part, val and test included.
    bn_train = _case_stamps(ctx.data.root, ctx.data.split.train) if bn_mode == "adapt" else None
    seed_part = ctx.seed if ident.weights_sha256 == RANDOM_INIT else None
    return cache_key(
        "features",
        EMBED_VERSION,
        _library_versions(),
        bn_train,
        ident.name,
        ident.weights_sha256,
        seed_part,
        ctx.task.data.reader,
        ctx.task.data.options,
        pre.model_dump(),
        bn_mode,
        stamps,
        ctx.run.amp,
        # the protocol's normalisation setting and the encoder's pooling change every feature
        ctx.settings.model_dump(mode="json").get("normalize"),
        getattr(ident, "pooling", None),
    )


def _batches(ctx: RunContext, cases: list[Case], batch_size: int, desc: str):
    ds = image_dataset(ctx, cases)
    workers = loader_workers(ctx)
    dl = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
    )
    return interruptible(tqdm(dl, desc=desc, disable=not ctx.progress, leave=False))


@torch.no_grad()
def adapt_batchnorm(ctx: RunContext, encoder: Encoder, cases: list[Case], batch_size: int) -> None:
    """Re-estimate BatchNorm running statistics on ``cases`` (cumulative average), weights frozen."""
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    for x, _, _ in _batches(ctx, cases, batch_size, "bn-adapt"):
        encoder.embed(model_layout(normalize_batch(x.to(ctx.device), ctx.input_norm(encoder.input_spec))))
    encoder.eval()


@torch.inference_mode()
def embed_cases(ctx: RunContext, encoder: Encoder, cases: list[Case], batch_size: int, desc: str) -> np.ndarray:
    encoder.eval()
    out = []
    amp = ctx.run.amp
    norm = ctx.input_norm(encoder.input_spec)
    for x, _, _ in _batches(ctx, cases, batch_size, desc):
        x = model_layout(normalize_batch(x.to(ctx.device, non_blocking=True), norm))
        with autocast(ctx.device, amp):
            f = encoder.embed(x)
        out.append(f.float().cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, getattr(encoder, "embed_dim", 0)), np.float32)


def split_features(ctx: RunContext, bn_mode: str = "eval", batch_size: int = 64) -> tuple[dict[str, np.ndarray], dict[str, list[Case]], dict[str, float]]:
    """Features for train (label-fraction subset), val and test; from the cache when possible."""
    splits = {"train": ctx.train_cases(), "val": ctx.data.split.val, "test": ctx.data.split.test}
    store = ArrayCache(ctx.cache_dir / "features", enabled=ctx.run.feature_cache)
    feats: dict[str, np.ndarray] = {}
    encoder: Encoder | None = None
    t0 = time.perf_counter()
    extracted = 0

    def get_encoder() -> Encoder:
        nonlocal encoder
        if encoder is None:
            encoder = ctx.make_encoder().to(ctx.device)
            if ctx.device.type == "cuda":
                encoder = encoder.to(memory_format=torch.channels_last)
            if bn_mode == "adapt":
                # BN statistics from the full training split (not the label subset): unlabelled images.
                adapt_batchnorm(ctx, encoder, ctx.data.split.train, batch_size)
        return encoder

    for name, cases in splits.items():
        key = feature_key(ctx, cases, bn_mode)

        def compute(cases=cases, name=name) -> np.ndarray:
            nonlocal extracted
            extracted += len(cases)
            return embed_cases(ctx, get_encoder(), cases, batch_size, f"features:{name}").astype(np.float32)

        feats[name] = store.get_or_compute(key, compute)
    timings = {"features_s": time.perf_counter() - t0, "features_extracted": float(extracted)}
    return feats, splits, timings
