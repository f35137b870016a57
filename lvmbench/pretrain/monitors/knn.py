"""Online kNN accuracy on a labelled task: the standard "is it learning" signal of SSL runs.

The task's training split is the bank and its validation split the queries; the test split is
never read, so monitoring cannot leak into model selection on test. Images are decoded and
resized once (the task's reader and resize, at the monitor's size), kept in memory as uint8, and
embedded with the encoder in eval mode (running BatchNorm statistics, as evaluation embeds).
The vote is the harness's kNN protocol (``lvmbench.protocols.knn``: features centred on the bank's
mean, cosine, top-k weighted by exp(s / T)), with one fixed k, so the number tracks what
``lvmbench eval --protocol knn`` will measure (there k is selected on validation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lvmbench.data.task_data import load_task_data
from lvmbench.data.transforms import input_norm, normalize_batch, resize_image
from lvmbench.errors import UserError
from lvmbench.protocols.features import model_layout
from lvmbench.protocols.knn import centred, knn_predict
from lvmbench.suites import suite_data_root
from lvmbench.tasks import get_task


def knn_accuracy(bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor, k: int, num_classes: int, temperature: float = 0.07, center: bool = True) -> dict[str, float]:
    """Accuracy and balanced accuracy of the weighted kNN vote of ``query`` against ``bank``."""
    x = {"train": bank.float(), "query": query.float()}
    x = centred(x) if center else x
    prob = knn_predict(x["train"], bank_y.long(), x["query"], k, num_classes, temperature)
    pred = prob.argmax(axis=1)
    y = query_y.cpu().numpy()
    recalls = [float((pred[y == c] == c).mean()) for c in range(num_classes) if (y == c).any()]
    return {"acc": float((pred == y).mean()), "balanced_acc": float(np.mean(recalls))}


@dataclass
class MonitorImages:
    task: str
    bank: torch.Tensor  # uint8 (N, 3, S, S)
    bank_y: torch.Tensor
    query: torch.Tensor
    query_y: torch.Tensor
    num_classes: int
    intensity: str
    temperature: float


def load_monitor_images(task_id: str, suite: str, data_root: Path | None, size: int) -> MonitorImages:
    """The task's train (bank) and validation (queries) images at ``size`` px, as uint8 tensors."""
    spec = get_task(task_id)
    if not spec.in_suite(suite) and suite != "lvmmed":
        raise UserError(f"--monitor-task {task_id} has no '{suite}' profile", fix="pick another --monitor-suite or task (`lvmbench tasks --suite SUITE`)")
    spec = spec.for_suite(suite)
    if spec.family != "classification":
        raise UserError(f"--monitor-task {task_id} is a {spec.family} task; the kNN monitor needs class labels", fix="name a classification task, e.g. --monitor-task brain_tumor_linear")
    root = suite_data_root(suite, data_root, generate=False)
    data = load_task_data(spec, root, suite=suite)
    bank, queries = data.split.train, data.split.val
    if not bank or not queries:
        raise UserError(f"--monitor-task {task_id}: the {suite} split has {len(bank)} training and {len(queries)} validation cases", fix="the monitor needs both (it never reads the test split); pick another task")
    pre = spec.preprocess

    def stack(cases) -> torch.Tensor:
        arrs = [resize_image(data.reader.load_image(c), size, pre.resize, 3) for c in cases]
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()

    def labels(cases) -> torch.Tensor:
        return torch.tensor([int(c.label) for c in cases], dtype=torch.long)

    knn = dict(spec.protocols.get("knn") or {})
    return MonitorImages(task_id, stack(bank), labels(bank), stack(queries), labels(queries), spec.num_classes, pre.intensity, float(knn.get("temperature", 0.07)))


@torch.no_grad()
def embed_images(encoder: torch.nn.Module, images: torch.Tensor, intensity: str, device: torch.device, batch: int = 128) -> torch.Tensor:
    """Pooled embeddings of uint8 images in eval mode; the encoder's train/eval state is restored."""
    was_training = encoder.training
    encoder.eval()
    norm = input_norm(None, intensity, encoder.input_spec)
    out = []
    try:
        for i in range(0, len(images), batch):
            x = normalize_batch(images[i : i + batch].to(device), norm)
            out.append(encoder.embed(model_layout(x)).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


class KNNMonitor:
    def __init__(self, images: MonitorImages, k: int = 20):
        self.images, self.k = images, k

    def evaluate(self, encoder: torch.nn.Module, device: torch.device) -> tuple[dict[str, float], torch.Tensor]:
        """({"acc", "balanced_acc", "k", "bank", "queries"}, the query embeddings)."""
        im = self.images
        bank = embed_images(encoder, im.bank, im.intensity, device)
        query = embed_images(encoder, im.query, im.intensity, device)
        res = knn_accuracy(bank, im.bank_y, query, im.query_y, self.k, im.num_classes, im.temperature)
        return {**res, "k": self.k, "bank": len(bank), "queries": len(query)}, query
