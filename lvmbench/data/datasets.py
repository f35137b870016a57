"""torch Datasets over cases: decoded once, resized once, cached on disk as uint8."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lvmbench.data.cache import ArrayCache, cache_key, file_stamp
from lvmbench.data.cases import Case, DatasetReader
from lvmbench.data.transforms import resize_image


class ImageDataset(Dataset):
    """Yields ``(uint8 CxHxW tensor, label, index)`` for classification-style protocols."""

    def __init__(self, reader: DatasetReader, cases: list[Case], size: int, channels: int = 3, resize: str = "bilinear", cache: ArrayCache | None = None):
        self.reader = reader
        self.cases = cases
        self.size = size
        self.channels = channels
        self.resize = resize
        self.cache = cache or ArrayCache(None, enabled=False)
        self._reader_id = [type(reader).__name__, reader.options]

    def key(self, case: Case) -> str:
        stamps = [file_stamp(self.reader.root / f) for f in (case.files or (case.image,))]
        return cache_key("image", self._reader_id, case.id, stamps, self.size, self.channels, self.resize)

    def array(self, i: int) -> np.ndarray:
        case = self.cases[i]
        return self.cache.get_or_compute(
            self.key(case), lambda: resize_image(self.reader.load_image(case), self.size, self.resize, self.channels)
        )

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        arr = self.array(i)
        label = self.cases[i].label
        return torch.from_numpy(arr).permute(2, 0, 1), -1 if label is None else int(label), i
