"""MedMNIST ``.npz`` files: ``{train,val,test}_images`` and ``{train,val,test}_labels``.

Images are (N, H, W) greyscale or (N, H, W, 3) RGB uint8; labels are (N, 1) as published or (N,) as
some re-saved copies store them. Multi-column (multi-label) and 3D variants are refused with a
clear message rather than read wrongly. Case ids are ``<split>/<index>`` (MedMNIST publishes no
patient ids, so every image is its own group); the publisher split is ``case.meta['split']``.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from lvmbench.data.cases import READERS, Case, DatasetReader, Issue
from lvmbench.data.contained import InsidePath
from lvmbench.data.reader_options import ReaderOptions, Str
from lvmbench.errors import DataError

SPLITS = ("train", "val", "test")


class MedMNISTOptions(ReaderOptions):
    file: InsidePath = Field(description="the .npz file inside the dataset folder, e.g. retinamnist.npz")
    md5: Str | None = Field(None, description="official checksum; verify warns when the copy differs")


@READERS.register("medmnist")
class MedMNIST(DatasetReader):
    """Options: ``file`` (the ``.npz`` inside the dataset folder, e.g. ``retinamnist.npz``) and
    ``md5`` (the official checksum: verify reports a copy that differs, since its numbers are then
    not comparable with published ones). Label range is checked by verify against the task's classes."""

    kind = "classification"
    Options = MedMNISTOptions
    example = {"reader": "medmnist", "dir": "medmnist", "options": {"file": "retinamnist.npz", "md5": "bd4c0672f1bba3e3a89f0e4e876791e4"}}

    def __init__(self, root: str | Path, file: str = "", md5: str | None = None, **options: Any):
        super().__init__(root, **options)
        if not file:
            raise DataError("the medmnist reader needs data.options.file", path=self.root, fix="set data.options.file in the task (e.g. retinamnist.npz)")
        self.file = file
        self.md5 = md5
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def path(self) -> Path:
        return self.root / self.file

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers and verify's pool get the reader without the decoded arrays; each
        # process loads the (small) file once on first use.
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def _load(self) -> dict[str, np.ndarray]:
        if self._arrays is not None:
            return self._arrays
        self.require_root("point --data-root at the folder that holds the MedMNIST .npz files")
        if not self.path.is_file():
            raise DataError("MedMNIST file not found", path=self.path, fix="download it from medmnist.com (or zenodo) into this folder, or fix data.options.file")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"not a readable .npz file ({str(e)[:100]})", path=self.path, fix="re-download the file") from None
        self._arrays = self._validate(arrays)
        return self._arrays

    def _validate(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        present = [s for s in SPLITS if f"{s}_images" in arrays]
        if not present:
            raise DataError(f"no '<split>_images' arrays (keys: {', '.join(sorted(arrays))})", path=self.path, fix="use a MedMNIST .npz (keys train_images, train_labels, ...)")
        out: dict[str, np.ndarray] = {}
        for s in present:
            img, key = arrays[f"{s}_images"], f"{s}_labels"
            if key not in arrays:
                raise DataError(f"'{s}_images' has no '{key}'", path=self.path, fix="re-download the file")
            lab = arrays[key]
            if img.ndim == 4 and img.shape[-1] not in (1, 3):
                raise DataError(f"'{s}_images' has shape {img.shape}: a 3D MedMNIST volume set", path=self.path, fix="use a 2D MedMNIST file; 3D variants are not supported")
            if img.ndim not in (3, 4):
                raise DataError(f"'{s}_images' has shape {img.shape}, expected (N, H, W) or (N, H, W, 3)", path=self.path, fix="re-download the file")
            if lab.ndim == 2 and lab.shape[1] == 1:
                lab = lab[:, 0]
            if lab.ndim != 1:
                raise DataError(f"'{key}' has shape {lab.shape}: multi-label or multi-column labels", path=self.path, fix="use a single-label MedMNIST file (ChestMNIST is multi-label and not supported)")
            if len(lab) != len(img):
                raise DataError(f"'{s}_images' has {len(img)} images but '{key}' has {len(lab)} labels", path=self.path, fix="re-download the file")
            if not np.issubdtype(lab.dtype, np.integer):
                if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                    raise DataError(f"'{key}' holds non-integer labels", path=self.path, fix="re-download the file")
                lab = lab.astype(np.int64)
            out[f"{s}_images"], out[key] = img, lab.astype(np.int64)
        return out

    def cases(self) -> list[Case]:
        arrays = self._load()
        out: list[Case] = []
        for s in SPLITS:
            if f"{s}_labels" not in arrays:
                continue
            for i, label in enumerate(arrays[f"{s}_labels"].tolist()):
                cid = f"{s}/{i:06d}"
                out.append(Case(id=cid, group=cid, image=self.file, label=int(label), files=(self.file,), meta={"split": s, "index": i}))
        return out

    def load_image(self, case: Case) -> np.ndarray:
        img = self._load()[f"{case.meta['split']}_images"][case.meta["index"]]
        if img.dtype != np.uint8:
            raise DataError(f"images are {img.dtype}, expected uint8", path=self.path, fix="re-download the file")
        return np.ascontiguousarray(img[..., None] if img.ndim == 2 else img)

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        if not self.md5:
            return []
        digest = hashlib.md5(self.path.read_bytes()).hexdigest()
        if digest == self.md5.lower():
            return []
        return [
            Issue(
                str(self.path),
                f"MD5 {digest} differs from the official {self.md5} (re-saved or subsampled copy)",
                "use the official file if results must be comparable with published numbers",
                fatal=False,
            )
        ]
