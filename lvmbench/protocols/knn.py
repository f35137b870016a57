"""k-nearest-neighbour classification on cached, L2-normalised features (DINO-style weighted vote).

``k`` is selected on the validation split from ``ks``; the test split is scored once.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lvmbench.protocols.base import PROTOCOLS, Protocol, ProtocolOutput, RunContext
from lvmbench.protocols.classification_common import counts, labels_of, per_case_records, score
from lvmbench.protocols.features import split_features


def knn_predict(train: torch.Tensor, train_y: torch.Tensor, query: torch.Tensor, k: int, num_classes: int, temperature: float, chunk: int = 1024) -> np.ndarray:
    """Class probabilities from the ``k`` most cosine-similar training samples, weighted by
    ``exp(sim / temperature)``."""
    train = torch.nn.functional.normalize(train, dim=1)
    query = torch.nn.functional.normalize(query, dim=1)
    k = min(k, len(train))
    out = []
    for i in range(0, len(query), chunk):
        sim = query[i : i + chunk] @ train.T
        top, idx = sim.topk(k, dim=1)
        w = (top / temperature).exp()
        votes = torch.zeros(len(top), num_classes, device=train.device, dtype=w.dtype)
        votes.scatter_add_(1, train_y[idx], w)
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, num_classes))


@PROTOCOLS.register("knn")
class KNN(Protocol):
    name = "knn"
    families = ("classification",)

    def run(self, ctx: RunContext) -> ProtocolOutput:
        hp = dict(ctx.hparams)
        ks = [int(v) for v in hp.get("ks", [10, 20, 50])]
        temperature = float(hp.get("temperature", 0.07))
        t0 = time.perf_counter()
        feats, splits, timings = split_features(ctx, bn_mode=hp.get("bn_mode", "eval"), batch_size=int(hp.get("feature_batch_size", 64)))
        x = {k: torch.from_numpy(v).float().to(ctx.device) for k, v in feats.items()}
        ytr = torch.from_numpy(labels_of(splits["train"])).to(ctx.device)
        n_cls = ctx.task.num_classes
        primary = ctx.task.primary_metric
        val_scores = {k: score(splits["val"], knn_predict(x["train"], ytr, x["val"], k, n_cls, temperature), n_cls)[primary] for k in ks}
        best_k = max(ks, key=lambda k: (val_scores[k], -k))
        prob = knn_predict(x["train"], ytr, x["test"], best_k, n_cls, temperature)
        timings["total_s"] = time.perf_counter() - t0
        return ProtocolOutput(
            metrics=score(splits["test"], prob, n_cls),
            per_case=per_case_records(splits["test"], prob),
            hparams={**hp, "selected": {"k": best_k, "val_primary": val_scores[best_k]}, "val_by_k": val_scores},
            counts=counts(splits),
            timings=timings,
        )
