"""Decoded, resized segmentation data held in memory for training (decode once, cache on disk).

2D: every image and its mask are decoded, resized once (nearest neighbour for masks; the paper's
per-image min-max to 0-255 after resizing) and stored in the ``ArrayCache``; the test split also
keeps its native-resolution masks for the clean metrics. 3D: every volume is normalised (Med3D-style
percentile clip + z-score, as LVM-Med's MMWHS preparation), sliced once along the reader's axis and
each slice resized, stored as one ``(2, D, S, S)`` uint8 array (image, label); the test and OOD sets
also cache their native-resolution label maps. Decoding runs in data loader workers; training then
indexes uint8 tensors in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lvmbench.data.cache import ArrayCache, cache_key, file_stamp
from lvmbench.data.cases import Case, DatasetReader
from lvmbench.data.transforms import resize_image, resize_mask
from lvmbench.errors import DataError


def minmax_uint8(img: np.ndarray) -> np.ndarray:
    """LVM-Med's per-image rescale: ``(x - min) * 255 / (0.01 + max - min)``, truncated to uint8."""
    a = img.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) * (255.0 / (0.01 + hi - lo))).astype(np.uint8)


def volume_uint8(vol: np.ndarray, mode: str = "med3d") -> np.ndarray:
    """A float volume -> uint8 0-255.

    ``med3d``: clip to the 0.5/99.5 percentiles, z-score, divide by 10, clip to [0, 1] (LVM-Med's MMWHS
    preparation, after Med3D); ``percentile``: clip to the 0.5/99.5 percentiles and stretch;
    ``minmax``: stretch the full range.
    """
    v = vol.astype(np.float32)
    if mode in ("med3d", "percentile"):
        lo, hi = np.percentile(v, [0.5, 99.5])
        v = np.clip(v, lo, hi)
    if mode == "med3d":
        sd = float(v.std())
        v = (v - float(v.mean())) / (sd if sd > 0 else 1.0) / 10.0
        v = np.clip(v, 0.0, 1.0)
    elif mode in ("percentile", "minmax"):
        lo, hi = float(v.min()), float(v.max())
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    else:
        raise ValueError(f"unknown volume normalisation '{mode}' (med3d | percentile | minmax)")
    return (v * 255.0).astype(np.uint8)


def _labels_uint8(target: np.ndarray, case: Case) -> np.ndarray:
    if target.size and (int(target.min()) < 0 or int(target.max()) > 255):
        raise DataError(f"label values outside 0-255 in case '{case.id}'", path=case.target or case.image, fix="check data.options (label_map) of the task")
    return target.astype(np.uint8)


@dataclass
class Prep:
    """What the decoded arrays depend on (goes into every cache key)."""

    size: int
    channels: int
    resize: str
    minmax: bool
    volume_norm: str = "med3d"

    def key(self) -> list[Any]:
        return [self.size, self.channels, self.resize, self.minmax, self.volume_norm]


class _Items(Dataset):
    """One case per item: cached resized arrays (+ the native label map when asked)."""

    def __init__(self, reader: DatasetReader, cases: list[Case], prep: Prep, cache: ArrayCache, native: bool, volumes: bool):
        self.reader, self.cases, self.prep, self.cache = reader, cases, prep, cache
        self.native, self.volumes = native, volumes
        self.reader_id = [type(reader).__name__, reader.options]

    def __len__(self) -> int:
        return len(self.cases)

    def _key(self, kind: str, case: Case, *extra: Any) -> str:
        stamps = [file_stamp(self.reader.root / f) for f in (case.files or (case.image,))]
        return cache_key(kind, self.reader_id, case.id, stamps, *extra)

    def __getitem__(self, i: int) -> dict[str, Any]:
        case = self.cases[i]
        p = self.prep
        native: np.ndarray | None = None

        def native_labels() -> np.ndarray:
            # Native label maps are kept in the cache only for the sets scored at native size.
            nonlocal native
            if native is None:
                decode = lambda: _labels_uint8(self.reader.load_target(case), case)  # noqa: E731
                native = self.cache.get_or_compute(self._key("seg-native", case), decode) if self.native else decode()
            return native

        if self.volumes:
            def compute() -> np.ndarray:
                vol = volume_uint8(self.reader.load_image(case), p.volume_norm)
                lab = native_labels()
                if lab.shape != vol.shape:
                    raise DataError(f"label volume {lab.shape} and image {vol.shape} differ in shape", path=case.target, fix="re-export the label on the image grid")
                imgs = [resize_image(s, p.size, p.resize, 1)[..., 0] for s in vol]
                if p.minmax:
                    imgs = [minmax_uint8(s) for s in imgs]
                labs = [resize_mask(s, p.size).astype(np.uint8) for s in lab]
                return np.stack([np.stack(imgs), np.stack(labs)])

            arr = self.cache.get_or_compute(self._key("seg3d-slices", case, p.key()), compute)
            out = {"index": i, "image": arr[0], "mask": arr[1]}
        else:
            def compute_image() -> np.ndarray:
                img = resize_image(self.reader.load_image(case), p.size, p.resize, p.channels)
                return minmax_uint8(img) if p.minmax else img

            def compute_mask() -> np.ndarray:
                return resize_mask(native_labels(), p.size).astype(np.uint8)

            image = self.cache.get_or_compute(self._key("seg2d-image", case, p.key()), compute_image)
            mask = self.cache.get_or_compute(self._key("seg2d-mask", case, p.size), compute_mask)
            if mask.shape != image.shape[:2]:
                raise DataError("cached image and mask differ in size", path=case.image, fix="clear the cache folder")
            out = {"index": i, "image": np.ascontiguousarray(image.transpose(2, 0, 1)), "mask": mask}
        if self.native:
            out["native"] = native_labels()
        return out


@dataclass
class Prepared:
    """Decoded arrays of one list of cases, aligned with ``cases``."""

    cases: list[Case]
    images: list[torch.Tensor]  # 2D: (C, S, S) uint8; 3D: (D, S, S) uint8
    masks: list[torch.Tensor]  # (S, S) / (D, S, S) uint8
    native: list[np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """2D: all images (N, C, S, S) and masks (N, S, S) as two tensors."""
        return torch.stack(self.images), torch.stack(self.masks)


def prepare(
    reader: DatasetReader,
    cases: list[Case],
    prep: Prep,
    cache: ArrayCache,
    *,
    native: bool,
    volumes: bool,
    workers: int = 0,
    desc: str = "decode",
    progress: bool = True,
) -> Prepared:
    ds = _Items(reader, cases, prep, cache, native, volumes)
    dl = DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers, persistent_workers=False)
    images: list[torch.Tensor] = [None] * len(cases)  # type: ignore[list-item]
    masks: list[torch.Tensor] = [None] * len(cases)  # type: ignore[list-item]
    natives: list[np.ndarray] = [None] * len(cases)  # type: ignore[list-item]
    for item in tqdm(dl, desc=desc, disable=not progress, leave=False, total=len(cases)):
        i = int(item["index"])
        images[i] = torch.as_tensor(item["image"])
        masks[i] = torch.as_tensor(item["mask"])
        if native:
            natives[i] = np.asarray(item["native"])
    return Prepared(cases, images, masks, natives if native else None)
