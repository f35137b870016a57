"""Detection data: decoded + resized images cached on disk, boxes in resized pixels, flips, and
class-balanced oversampling.

Resize rules (the same at train and test unless the paper's evaluation is requested):
- ``keep_ratio``: the longer side becomes ``size`` (mmdet ``Resize(img_scale=(size, size),
  keep_ratio=True)``, LVM-Med's training rule); the batch is padded, not the image.
- ``stretch``: ``size`` x ``size``.
- ``mmdet_test``: mmdet's default test scale (1333, 800) with kept ratio, which LVM-Med's evaluation
  used without meaning to (reference §1.3); only with ``paper_eval``.
Predictions are mapped back to the decoded image's pixels and scored against the reader's boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lvmbench.data.cache import ArrayCache, cache_key, file_stamp
from lvmbench.data.cases import Case, DatasetReader
from lvmbench.data.transforms import resize_image
from lvmbench.metrics.detection import ImageBoxes

RESIZE_MODES = ("keep_ratio", "stretch", "mmdet_test")


@dataclass(frozen=True)
class Resize:
    mode: str
    size: int

    def shape(self, h: int, w: int) -> tuple[int, int]:
        if self.mode == "stretch":
            return self.size, self.size
        if self.mode == "keep_ratio":
            s = self.size / max(h, w)
        elif self.mode == "mmdet_test":
            s = min(1333 / max(h, w), 800 / min(h, w))
        else:
            raise ValueError(f"resize mode '{self.mode}' is not one of {RESIZE_MODES}")
        return max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))


def boxes_array(boxes) -> tuple[np.ndarray, np.ndarray]:
    b = np.array([[x.x1, x.y1, x.x2, x.y2] for x in boxes], np.float32).reshape(-1, 4)
    lab = np.array([x.label for x in boxes], np.int64)
    return b, lab


class DetectionDataset(Dataset):
    """Yields dicts: ``image`` uint8 CxHxW (resized), ``boxes`` float32 (N, 4) in resized pixels,
    ``labels`` int64, ``index``, ``scale`` (sy, sx) from decoded to resized pixels."""

    def __init__(self, reader: DatasetReader, cases: list[Case], resize: Resize, channels: int, cache: ArrayCache):
        self.reader = reader
        self.cases = cases
        self.resize = resize
        self.channels = channels
        self.cache = cache
        self._reader_id = [type(reader).__name__, {k: v for k, v in reader.options.items() if k != "classes"}]
        # Targets are small; read them once (VinDr fuses radiologists' boxes here) and keep them.
        self.targets = [boxes_array(reader.load_target(c)) for c in cases]
        self._sizes: dict[int, tuple[int, int]] = {}  # native (h, w): scoring asks for it per epoch

    def _key(self, case: Case, what: str) -> str:
        return cache_key("det-" + what, self._reader_id, case.id, file_stamp(self.reader.root / case.image), self.resize.mode, self.resize.size, self.channels)

    def _decode(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        img = self.reader.load_image(case)
        h, w = img.shape[:2]
        return resize_image(img, self.resize.shape(h, w), "bilinear", self.channels), np.array([h, w], np.int64)

    def arrays(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        case = self.cases[i]
        decoded: dict[str, np.ndarray] = {}

        def compute(what: str) -> np.ndarray:
            if not decoded:
                decoded["image"], decoded["size"] = self._decode(case)
            return decoded[what]

        size = self.cache.get_or_compute(self._key(case, "size"), lambda: compute("size"))
        img = self.cache.get_or_compute(self._key(case, "image"), lambda: compute("image"))
        return img, (int(size[0]), int(size[1]))

    def original_size(self, i: int) -> tuple[int, int]:
        """The image's native size, without loading its pixels (scoring needs only this)."""
        if i not in self._sizes:
            case = self.cases[i]
            size = self.cache.get_or_compute(self._key(case, "size"), lambda: self._decode(case)[1])
            self._sizes[i] = (int(size[0]), int(size[1]))
        return self._sizes[i]

    def ground_truth(self, i: int) -> ImageBoxes:
        b, lab = self.targets[i]
        h, w = self.original_size(i)
        b = b.copy()
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        return ImageBoxes(b, lab)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict:
        img, (h, w) = self.arrays(i)
        sy, sx = img.shape[0] / h, img.shape[1] / w
        b, lab = self.targets[i]
        b = b * np.array([sx, sy, sx, sy], np.float32)
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, img.shape[1])
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, img.shape[0])
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])  # boxes clipped to nothing
        return {
            "image": torch.from_numpy(img).permute(2, 0, 1),
            "boxes": torch.from_numpy(b[keep]),
            "labels": torch.from_numpy(lab[keep]),
            "index": i,
            "scale": (sy, sx),
        }


def collate(batch: list[dict]) -> list[dict]:
    return batch


def hflip(sample: dict) -> dict:
    img = sample["image"].flip(-1)
    w = img.shape[-1]
    b = sample["boxes"].clone()
    b[:, 0], b[:, 2] = w - sample["boxes"][:, 2], w - sample["boxes"][:, 0]
    return {**sample, "image": img, "boxes": b}


def repeat_factor_indices(labels: list[np.ndarray], num_classes: int, thr: float | None) -> list[int]:
    """Class-balanced oversampling (mmdet ``ClassBalancedDataset``, LVIS repeat factors): class ``c``
    in a fraction ``f_c`` of images gets ``r_c = max(1, sqrt(thr / f_c))``; an image is repeated
    ``ceil(max r_c)`` times per epoch (once when it has no boxes)."""
    n = len(labels)
    if not thr or n == 0:
        return list(range(n))
    freq = np.zeros(num_classes)
    for lab in labels:
        for c in set(lab.tolist()):
            freq[c] += 1
    freq /= n
    r_c = np.where(freq > 0, np.maximum(1.0, np.sqrt(thr / np.maximum(freq, 1e-12))), 1.0)
    out = []
    for i, lab in enumerate(labels):
        r = max((r_c[c] for c in set(lab.tolist())), default=1.0)
        out.extend([i] * math.ceil(r))
    return out
