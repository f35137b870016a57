"""Retrieval protocol: Recall@K of the frozen embedding, plus an optional MS-loss projection head.

1. Raw: embed the test split (cached features), L2-normalise, score Recall@1/2/4/8, R-precision
   and MAP@R with every test image as a query against the rest of the test split (cosine; the
   query's own group, i.e. patient or volume, excluded, not only the query). Primary metric ``recall@1``.
2. ``train_head: true``: a linear projection (``head_dim``) on standardised cached features is
   trained with the multi-similarity loss + miner (``ms_preset``, default pml) on P×K batches;
   the epoch with the best **validation** Recall@1 (queries and gallery = validation split) is
   kept and scores the test split once. The official MS-loss code selected on the test set
   (reference §2.3); this does not. Reported as ``ms_head/recall@K`` beside the raw numbers.

Per-case records: one per test query with a same-class item outside its group; ``score`` = raw hit@1.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from lvmbench.data.samplers import PKBatchSampler
from lvmbench.losses.multi_similarity import MultiSimilarityLoss
from lvmbench.metrics.retrieval import RetrievalResult, retrieval_metrics
from lvmbench.protocols import declared
from lvmbench.protocols.base import PROTOCOLS, Protocol, ProtocolOutput, RunContext, seed_everything
from lvmbench.protocols.classification_common import counts, labels_of
from lvmbench.protocols.features import split_features
from lvmbench.protocols.linear import fused_ok, standardize
from lvmbench.protocols.selection import require_validation
from lvmbench.protocols.settings import RetrievalSettings

HEAD_PREFIX = "ms_head/"


@torch.no_grad()
def project(head: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    head.eval()
    out = [head(x[i : i + batch]).float() for i in range(0, len(x), batch)]
    return torch.cat(out) if out else x.new_zeros(0, 1)


def train_ms_head(
    x: dict[str, torch.Tensor],
    y: dict[str, np.ndarray],
    hp: RetrievalSettings,
    seed: int,
    groups: dict[str, list[str]] | None = None,
) -> tuple[nn.Module, dict[str, Any], list[dict[str, float]]]:
    """MS-loss projection head on cached features, selected on validation Recall@1."""
    seed_everything(seed)  # the head's initialisation and the sampler are functions of the seed
    dim, epochs, lr, wd = hp.head_dim, hp.head_epochs, hp.head_lr, hp.head_weight_decay
    p, k = hp.pk
    loss_fn = MultiSimilarityLoss(hp.ms_preset)
    in_dim = x["train"].shape[1]
    head = nn.Linear(in_dim, dim).to(x["train"].device)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=wd, fused=fused_ok(x["train"]))
    sampler = PKBatchSampler(y["train"], p, k, seed=seed)
    ytr = torch.from_numpy(y["train"]).to(x["train"].device)

    def val_r1() -> float:
        v = retrieval_metrics(project(head, x["val"]).cpu(), y["val"], ks=(1,), with_map=False, groups=(groups or {}).get("val")).metrics()["recall@1"]
        return -float("inf") if np.isnan(v) else v

    best_val, best_state, info = val_r1(), copy.deepcopy(head.state_dict()), {"epoch": 0}
    history = [{"epoch": 0, "val_recall@1": best_val, "loss": float("nan")}]
    for epoch in range(1, epochs + 1):
        head.train()
        losses = []
        for batch in sampler:
            idx = torch.as_tensor(batch, device=x["train"].device)
            loss = loss_fn(head(x["train"][idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        val = val_r1()
        history.append({"epoch": epoch, "val_recall@1": val, "loss": float(np.mean(losses)) if losses else float("nan")})
        if val > best_val:  # strict: the earliest epoch wins ties
            best_val, best_state, info = val, copy.deepcopy(head.state_dict()), {"epoch": epoch}
    head.load_state_dict(best_state)
    info["val_recall@1"] = best_val
    info.update({"head_dim": dim, "lr": lr, "P": sampler.p, "K": k, **loss_fn.params.as_dict(), "ms_preset": loss_fn.preset})
    return head, info, history


def random_ranking_recall1(labels: np.ndarray, groups: list[str]) -> float:
    """Expected Recall@1 of a random ranking: per query with a positive, the share of same-label
    items in its gallery (everything outside its own group), averaged over those queries."""
    labels = np.asarray(labels)
    g = np.asarray(groups, dtype=object)
    vals = []
    for i in range(len(labels)):
        gallery = g != g[i]
        n = int(gallery.sum())
        pos = int((gallery & (labels == labels[i])).sum())
        if n and pos:
            vals.append(pos / n)
    return float(np.mean(vals)) if vals else float("nan")


def per_query_records(cases, res: RetrievalResult, head_res: RetrievalResult | None) -> list[dict[str, Any]]:
    recs = []
    for i, c in enumerate(cases):
        if not res.has_positive[i]:
            continue
        r: dict[str, Any] = {"case": c.id, "group": c.group, "split": "test", "score": float(res.hits[i, 0]), "label": int(c.label)}
        r["hits"] = {f"recall@{k}": bool(res.hits[i, j]) for j, k in enumerate(res.ks)}
        if head_res is not None:
            r["ms_head_hit@1"] = bool(head_res.hits[i, 0])
        recs.append(r)
    return recs


@PROTOCOLS.register("retrieval")
class Retrieval(declared.Retrieval, Protocol):
    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp: RetrievalSettings = ctx.settings  # type: ignore[assignment]
        ks = tuple(sorted(set(hp.ks)))
        t0 = time.perf_counter()
        if hp.train_head:
            require_validation(ctx, ctx.data.split.val)
        feats, splits, timings = split_features(ctx, bn_mode=hp.bn_mode, batch_size=hp.feature_batch_size)
        y = {k: labels_of(v) for k, v in splits.items()}
        # a query's own patient/volume is masked from its gallery, not only the query itself
        groups = {k: [c.group for c in v] for k, v in splits.items()}
        raw = retrieval_metrics(feats["test"], y["test"], ks, groups=groups["test"])
        metrics = raw.metrics()
        metrics["queries"] = float(raw.has_positive.sum())
        metrics["queries_without_positive"] = float((~raw.has_positive).sum())
        used: dict[str, Any] = {}
        extra: dict[str, Any] = {"baseline": {"metric": "recall@1", "value": random_ranking_recall1(y["test"], groups["test"]), "predictor": "a random ranking"}}
        head_res = None
        if hp.train_head:
            t1 = time.perf_counter()
            std = standardize(feats)
            x = {k: torch.from_numpy(v).float().to(ctx.device) for k, v in std.items()}
            head, info, history = train_ms_head(x, y, hp, ctx.seed, groups=groups)
            head_res = retrieval_metrics(project(head, x["test"]).cpu(), y["test"], ks, groups=groups["test"])
            metrics.update(head_res.metrics(HEAD_PREFIX))
            used["selected"] = info
            extra["val_history"] = history
            timings["head_s"] = time.perf_counter() - t1
        timings["total_s"] = time.perf_counter() - t0
        return ProtocolOutput(
            metrics=metrics,
            per_case=per_query_records(splits["test"], raw, head_res),
            hparams=used,
            counts=counts(splits),
            extra=extra,
            timings=timings,
            primary_metric="recall@1",
        )
