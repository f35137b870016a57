"""Unlabelled pretraining images: folders, WebDataset tar shards, a manifest, a resumable sampler.

Inputs (any mix, each ``--data`` argument one of):

- a folder, walked recursively: PNG/JPEG/TIFF/BMP/WebP files, DICOM files (every frame), NIfTI
  volumes (every slice along the last axis; 4-D volumes: the first channel). Uncompressed ``.tar``
  files found in it are read as shards;
- MedMNIST-style ``.npz`` files found in a folder: every uint8 array named ``*_images`` of shape
  (N, H, W) or (N, H, W, C) gives N images (``train_images``, ``val_images`` and ``test_images``
  alike: ``--exclude-test-of`` removes test rows by their pixels, see ``exclusion``);
- WebDataset shards: a ``.tar`` path, a glob or a brace pattern (``shards/train-{000..099}.tar``).
  A WebDataset sample is the group of members sharing a key (the name up to the first dot of its
  basename); its image is the member whose whole extension is an image type (``jpg``, ``png``,
  ``tif``, ``dcm`` ...), so ``0001.seg.png`` masks next to ``0001.jpg`` are not read as images.
  Shards are indexed once (member offsets) and read by seeking, a map-style dataset rather than a
  stream: shuffling, DistributedSampler-style sharding and exact resume then work as for folders.

The manifest lists every file (and every shard member) with its sha256 so a leakage audit can
compare pretraining data with task test splits by content, not by name.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import io
import os
import tarfile
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import braceexpand
import nibabel as nib
import numpy as np
import pydicom
import torch
from PIL import Image

from lvmbench.errors import DataError
from lvmbench.pretrain.views import ViewConfig, sample_generator, to_chw_rgb, two_views

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DICOM_EXT = (".dcm", ".dicom")
NIFTI_EXT = (".nii", ".nii.gz")
ARRAY_EXT = (".npz",)
SHARD_MEMBER_EXT = {e.lstrip(".") for e in IMAGE_EXT + DICOM_EXT}


@dataclass(frozen=True)
class Item:
    """One training image: a file, a slice/frame of a file, or a member of a tar shard."""

    path: str
    frame: int = 0
    member: str | None = None
    offset: int = 0
    size: int = 0

    @property
    def kind(self) -> str:
        if self.member is not None:
            return "npz" if self.path.lower().endswith(ARRAY_EXT) else "tar"
        name = self.path.lower()
        if name.endswith(NIFTI_EXT):
            return "nifti"
        return "dicom" if name.endswith(DICOM_EXT) else "image"


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _expand(pattern: str) -> list[str]:
    out: list[str] = []
    for p in braceexpand.braceexpand(pattern):
        out += sorted(glob.glob(p)) if glob.has_magic(p) else [p]
    return out


def _frames(path: str) -> int:
    low = path.lower()
    try:
        if low.endswith(NIFTI_EXT):
            shape = nib.load(path).shape
            return 1 if len(shape) < 3 else int(shape[2])
        if low.endswith(DICOM_EXT):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(getattr(ds, "NumberOfFrames", 1) or 1)
    except Exception as e:  # nibabel/pydicom raise many types for bad files
        raise DataError(f"unreadable header ({e.__class__.__name__}: {str(e)[:100]})", path=path, fix="re-export the file or exclude it with --exclude") from None
    return 1


def _index_shard(path: str, hashes: list[dict] | None) -> list[Item]:
    if path.lower().endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        raise DataError("compressed shards cannot be read by seeking", path=path, fix="write uncompressed .tar shards (webdataset's default)")
    items: list[Item] = []
    try:
        with tarfile.open(path, "r:") as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
            for m in members:
                base = os.path.basename(m.name)
                if "." not in base or base.startswith("."):
                    continue
                ext = base.split(".", 1)[1].lower()
                if ext in SHARD_MEMBER_EXT:
                    items.append(Item(path, member=m.name, offset=m.offset_data, size=m.size))
            if hashes is not None:
                with open(path, "rb") as f:
                    for it in items:
                        f.seek(it.offset)
                        hashes.append({"path": path, "member": it.member, "sha256": hashlib.sha256(f.read(it.size)).hexdigest(), "samples": 1})
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"not a readable tar shard ({e})", path=path, fix="check the file or remove it from --data") from None
    return items


def npz_arrays(path: str) -> dict[str, np.ndarray]:
    """The image arrays of an ``.npz`` (uint8 ``*_images``, one image per row)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in sorted(z.files) if k.endswith("_images") and z[k].dtype == np.uint8 and z[k].ndim in (3, 4)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"not a readable .npz file ({str(e)[:100]})", path=path, fix="re-download the file or exclude it with --exclude") from None


def _index_npz(path: str, hashes: list[dict] | None) -> list[Item]:
    items: list[Item] = []
    for key, arr in npz_arrays(path).items():
        items += [Item(path, frame=i, member=key) for i in range(len(arr))]
        if hashes is not None:
            hashes.append({"path": path, "member": key, "sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(), "samples": len(arr)})
    return items


def scan(sources: Sequence[str | Path], exclude: Sequence[str] = (), with_hashes: bool = True) -> tuple[list[Item], list[dict]]:
    """Items in a deterministic order (sorted per source) and the manifest (empty without hashes).

    ``exclude`` globs are matched against each file's path relative to its source folder and
    against its basename (e.g. ``*_mask*`` for BUSI, ``*/1st_manual/*`` for DRIVE)."""
    items: list[Item] = []
    manifest: list[dict] | None = [] if with_hashes else None

    def skip(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(os.path.basename(rel), pat) for pat in exclude)

    for src in sources:
        src = str(src)
        if os.path.isdir(src):
            files = sorted(str(p) for p in Path(src).rglob("*") if p.is_file() and not p.name.startswith("."))
            for f in files:
                low = f.lower()
                if skip(os.path.relpath(f, src)):
                    continue
                if low.endswith(".tar"):
                    items += _index_shard(f, manifest)
                elif low.endswith(ARRAY_EXT):
                    items += _index_npz(f, manifest)
                elif low.endswith(IMAGE_EXT + DICOM_EXT + NIFTI_EXT):
                    k = _frames(f)
                    items += [Item(f, frame=i) for i in range(k)]
                    if manifest is not None:
                        manifest.append({"path": f, "sha256": _sha256(f), "samples": k})
            continue
        paths = _expand(src)
        if not paths or not all(os.path.isfile(p) for p in paths):
            missing = next((p for p in paths if not os.path.isfile(p)), src)
            raise DataError("no such folder, file or shard pattern", path=missing, fix="pass a folder of images or .tar shards (brace patterns like shard-{000..009}.tar work)")
        for p in paths:
            if not p.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
                raise DataError("a single --data file must be a .tar shard", path=p, fix="pass the folder that holds the image instead")
            items += _index_shard(p, manifest)
    if not items:
        raise DataError(f"no images found in {', '.join(map(str, sources))}", fix=f"supported: {', '.join(IMAGE_EXT + DICOM_EXT + NIFTI_EXT + ARRAY_EXT)} files and uncompressed .tar shards")
    return items, manifest or []


def _window(a: np.ndarray) -> np.ndarray:
    """Float intensities -> uint8 with a 0.5–99.5 percentile window (robust to hot voxels)."""
    a = a.astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5]) if a.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _from_pil(src, name: str) -> np.ndarray:
    """PIL-readable bytes or file -> uint8. High-bit-depth greyscale (16-bit PNG/TIFF, float TIFF)
    is windowed like volumes: PIL's own conversion to RGB would clip it at 255."""
    try:
        with Image.open(src) as im:
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                return _window(np.asarray(im))
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0][:100] if str(e) else e.__class__.__name__
        raise DataError(f"unreadable or truncated image ({msg})", path=name, fix="re-export the file or exclude it with --exclude") from None


def _read_dicom(src, name: str) -> np.ndarray:
    try:
        ds = pydicom.dcmread(src)
        arr = ds.pixel_array.astype(np.float32)
    except Exception as e:  # pydicom raises many types (missing codec, truncated data)
        raise DataError(f"unreadable DICOM ({e.__class__.__name__}: {str(e)[:100]})", path=name, fix="install the codec pydicom names, or exclude the file") from None
    arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    out = _window(arr)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        out = 255 - out
    return out


def _read_nifti(path: str) -> np.ndarray:
    try:
        vol = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises many types for truncated/corrupt volumes
        raise DataError(f"unreadable NIfTI ({e.__class__.__name__}: {str(e)[:100]})", path=path, fix="re-export the volume or exclude it") from None
    if vol.ndim == 4:
        vol = vol[..., 0]
    return _window(vol)  # one window per volume, so slices keep their relative brightness


def decode(item: Item, volume: np.ndarray | None = None) -> np.ndarray:
    """HxW or HxWxC uint8 for one item (``volume``: an already decoded NIfTI/DICOM stack)."""
    if item.kind == "npz":
        arr = npz_arrays(item.path)[item.member] if volume is None else volume
        return arr[item.frame]
    if item.kind == "tar":
        with open(item.path, "rb") as f:
            f.seek(item.offset)
            data = f.read(item.size)
        name = f"{item.path}:{item.member}"
        if item.member.lower().endswith(DICOM_EXT):
            return _read_dicom(io.BytesIO(data), name)
        return _from_pil(io.BytesIO(data), name)
    if item.kind == "image":
        if not os.path.isfile(item.path):
            raise DataError("file not found (deleted since the scan?)", path=item.path, fix="restore it or rescan")
        return _from_pil(item.path, item.path)
    if volume is None:
        volume = _read_nifti(item.path) if item.kind == "nifti" else _read_dicom(item.path, item.path)
    if item.kind == "dicom":
        return volume if volume.ndim == 2 else volume[item.frame]
    return volume if volume.ndim == 2 else volume[:, :, item.frame]


def shrink(arr: np.ndarray, min_side: int) -> np.ndarray:
    """Downscale so the shorter side is ``min_side`` (never upscale): decoding a 1000-px image to
    train on 64-px crops wastes memory and time, and 2× the crop size keeps every crop of area
    scale ≥ 0.25 at full resolution."""
    h, w = arr.shape[:2]
    if min(h, w) <= min_side:
        return arr
    f = min_side / min(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR))


class PretrainDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]`` -> (view1, view2, box1, box2, index); views uint8 (3, S, S)."""

    def __init__(self, items: Sequence[Item], views: ViewConfig, seed: int = 0, cache_mb: int = 512):
        self.items, self.views, self.seed = list(items), views, seed
        self.cache_bytes = cache_mb << 20
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._used = 0

    def __len__(self) -> int:
        return len(self.items)

    def _remember(self, key: tuple[str, int], arr: np.ndarray) -> None:
        if arr.nbytes > self.cache_bytes:
            return
        self._cache[key] = arr
        self._used += arr.nbytes
        while self._used > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._used -= old.nbytes

    def image(self, index: int) -> np.ndarray:
        """Decoded, shrunk image; an LRU cache (per worker) keeps recent ones in memory."""
        item = self.items[index]
        key = (item.path if item.member is None else f"{item.path}:{item.member}", item.frame)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        volume = None
        if item.kind in ("nifti", "dicom", "npz"):
            # whole volume / image array: its other slices / rows are likely to follow
            vkey = (item.path if item.member is None else f"{item.path}:{item.member}", -1)
            volume = self._cache.get(vkey)
            if volume is None:
                if item.kind == "npz":
                    volume = npz_arrays(item.path)[item.member]
                else:
                    volume = _read_nifti(item.path) if item.kind == "nifti" else _read_dicom(item.path, item.path)
                self._remember(vkey, volume)
        arr = shrink(decode(item, volume), 2 * self.views.size)
        self._remember(key, arr)
        return arr

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        gen = sample_generator(self.seed, epoch, index)
        v1, v2, b1, b2 = two_views(to_chw_rgb(self.image(index)), self.views, gen)
        return v1, v2, b1, b2, index


class StepSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` for one process, from step ``start`` to ``stop``.

    Each epoch is a permutation seeded by (seed, epoch), cut into global batches of
    ``global_batch`` (the incomplete tail is dropped); process ``rank`` takes its slice of each.
    The order depends only on (seed, epoch, step), so resuming at step k continues it exactly.
    """

    def __init__(self, n: int, global_batch: int, start: int, stop: int, seed: int = 0, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError("global batch must divide evenly across processes")
        self.n, self.global_batch, self.start, self.stop = n, global_batch, start, stop
        self.seed, self.rank, self.world = seed, rank, world
        self.steps_per_epoch = n // global_batch
        if self.steps_per_epoch == 0:
            raise DataError(f"{n} images are fewer than one batch of {global_batch}", fix="add images or lower --batch-size")

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        local = self.global_batch // self.world
        perm, perm_epoch = None, -1
        for step in range(self.start, self.stop):
            epoch, k = divmod(step, self.steps_per_epoch)
            if epoch != perm_epoch:
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch, 7]).generate_state(1)[0]))
                perm, perm_epoch = torch.randperm(self.n, generator=gen).tolist(), epoch
            lo = k * self.global_batch + self.rank * local
            yield [(epoch, i) for i in perm[lo : lo + local]]


def collate(samples: list) -> tuple[torch.Tensor, ...]:
    v1, v2, b1, b2, idx = zip(*samples)
    return torch.stack(v1), torch.stack(v2), torch.stack(b1), torch.stack(b2), torch.tensor(idx)
