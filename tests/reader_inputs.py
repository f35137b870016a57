"""Tiny generated inputs for the reader and cache-key bad-input tests: a task YAML built in place and a
segmentation folder of discs (``images/cNN.png`` + ``masks/cNN.<ext>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from lvmbench.spec import TaskSpec

SEG_TASK = """
id: {id}
title: bad-input segmentation task
family: segmentation
modality: synthetic
classes: {classes}
data: {{reader: kvasir_seg, dir: {dir}, options: {{images: images/*.png, masks: "masks/{{name}}", threshold: 128}}}}
split: {{source: rule, val: 0.25, test: 0.25, stratify: false, group_by: {group_by}}}
preprocess: {{size: 16, channels: 3, intensity: raw255}}
protocols: {{seg2d: {{epochs: 1, batch_size: 4}}}}
primary_metric: dice
"""

VOL_TASK = """
id: {id}
title: bad-input volume task
family: segmentation
dims: 3d-slicewise
modality: synthetic
classes: [background, fg]
data: {{reader: decathlon, dir: {dir}, options: {{images: "images/*.nii*", pattern: '[^/]+/(?P<vol>[^/.]+)\.nii(\.gz)?', label: "labels/{{vol}}.nii.gz"}}}}
split: {{source: rule, val: 0.25, test: 0.25, stratify: false, group_by: {group_by}}}
preprocess: {{size: 16, channels: 1, intensity: raw255}}
protocols: {{seg3d: {{epochs: 1, batch_size: 8}}}}
primary_metric: iou3d
"""


def task(tasks: Path, text: str, **fields) -> TaskSpec:
    raw = yaml.safe_load(text.format(**fields))
    folder = tasks / raw["id"]
    folder.mkdir(parents=True, exist_ok=True)
    spec = TaskSpec.model_validate(raw)
    spec.folder = folder
    return spec


def disc(h: int = 20, w: int = 20, cy: int = 10, cx: int = 10, r: int = 5) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)


def seg_folder(root: Path, n: int = 8, mask_values: int = 255, ext: str = "png") -> Path:
    """``images/cNN.png`` with a bright disc and ``masks/cNN.<ext>`` holding ``disc * mask_values``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        m = disc(cy=6 + i % 8, cx=7 + i % 6)
        img = np.repeat((rng.integers(0, 60, m.shape) + m * 150).astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(img).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray((m * mask_values).astype(np.uint8)).save(root / "masks" / f"c{i:02d}.{ext}")
    return root
