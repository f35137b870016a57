"""A detection run context on a tiny VOC folder (no tests here)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from lvmbench.data.task_data import load_task_data
from lvmbench.encoders import create_encoder
from lvmbench.protocols.base import RunContext
from lvmbench.spec import RunOptions, RunUnit, TaskSpec

TINY = {"epochs": 2, "batch_size": 4, "lr": 0.001, "anchor_scale": 4, "rpn_proposals_train": 64, "rpn_proposals_test": 32, "rois_per_image": 32, "box_fc": 32, "fpn_channels": 32, "grad_clip": 5.0}


def make_ctx(root: Path, cache: Path, hp: dict, backend: str = "torchvision") -> RunContext:
    spec = TaskSpec.model_validate({
        "id": "tiny_det", "title": "tiny", "family": "detection", "modality": "synthetic", "classes": ["WBC", "RBC", "Platelets"],
        "data": {"reader": "voc", "dir": root.name}, "split": {"source": "publisher", "map": {"train": "train", "val": "val", "test": "test"}},
        "preprocess": {"size": 64}, "protocols": {"detection": {**TINY, **hp, "backend": backend}}, "primary_metric": "ap50",
    })
    data = load_task_data(spec, root.parent)
    enc, ident = create_encoder("resnet18", seed=0)
    unit = RunUnit(suite="test", task_id=spec.id, protocol="detection", encoder="resnet18", weights_sha256=ident.weights_sha256)
    return RunContext(unit=unit, task=spec, data=data, encoder_identity=ident, make_encoder=lambda: copy.deepcopy(enc), settings=spec.settings("detection"),
                      device=torch.device("cpu"), cache_dir=cache, run=RunOptions(progress=False, workers=0))
