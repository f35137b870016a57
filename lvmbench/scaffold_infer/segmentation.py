"""Segmentation layouts: image and mask folders paired by file name, 2D or 3D."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lvmbench.data.imageio import read_mask
from lvmbench.errors import UserError
from lvmbench.scaffold_infer import per_case
from lvmbench.scaffold_infer.common import IMAGE_EXT, MASK_SUFFIXES, VOLUME_EXT, Inferred, ext_of, stem_of


def _file_folders(root: Path, exts: tuple[str, ...]) -> dict[str, list[str]]:
    """Relative folder -> file names with one of ``exts``, two levels deep."""
    out: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if len(rel.parts) < 2 else []
        names = sorted(f for f in filenames if ext_of(f).lower() in exts)
        if names:
            out[rel.as_posix()] = names
    return out


def _best_pair(folders: dict[str, list[str]]) -> tuple[str, str, str, int] | None:
    """(folder A, folder B, suffix, matches): B's stems are A's stems + suffix, most matches."""
    best = None
    keys = sorted(folders)
    for a in keys:
        stems_a = {stem_of(f) for f in folders[a]}
        for b in keys:
            if a == b:
                continue
            stems_b = {stem_of(f) for f in folders[b]}
            for suf in MASK_SUFFIXES:
                n = sum(1 for s in stems_a if s + suf in stems_b)
                if n and (best is None or n > best[3]):
                    best = (a, b, suf, n)
    return best


def _sample_arrays(root: Path, folder: str, names: list[str], volumes: bool, n: int) -> list[np.ndarray]:
    """Up to ``n`` files spread over ``names``, read as masks (volumes through SimpleITK); an
    unreadable sample says nothing either way and is left out."""
    out = []
    for name in names[:: max(1, len(names) // n)][:n]:
        p = root / folder / name
        try:
            if volumes:
                out.append(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))
            else:
                out.append(read_mask(p))
        except Exception:  # noqa: BLE001
            continue
    return out


def _mask_score(root: Path, folder: str, names: list[str], volumes: bool) -> float:
    """How mask-like a folder's files are: the share of samples with few distinct values."""
    sample = _sample_arrays(root, folder, names, volumes, 4)
    hits = 0
    for a in sample:
        values = np.unique(a)
        mid = float(np.mean((a > 0.15 * a.max()) & (a < 0.85 * a.max()))) if a.max() > 0 else 0.0
        hits += len(values) <= 16 or mid < 0.02
    return hits / max(1, len(sample))


def _mask_classes(root: Path, folder: str, names: list[str], volumes: bool) -> list[str]:
    top = 0
    for a in _sample_arrays(root, folder, names, volumes, 8):
        values = np.unique(a)
        if len(values) <= 16 and values.max() < 32:
            top = max(top, int(values.max()))
    if top <= 1:
        return ["background", "foreground"]
    return ["background", *(f"class_{i}" for i in range(1, top + 1))]


def segmentation(root: Path) -> Inferred:
    vols = _file_folders(root, VOLUME_EXT)
    volumes = bool(vols)
    folders = vols or _file_folders(root, IMAGE_EXT)
    case_folders = per_case.find(root, volumes, _mask_score, _mask_classes)
    if case_folders is not None:
        return case_folders
    pair = _best_pair(folders)
    if pair is None:
        raise UserError("found no two folders whose files pair by name (images/ + masks/, any names) and no folder per case (case01/image.png + case01/mask.png)", path=root, fix="write data.options.images and masks by hand (see `lvmbench readers paired_images`)")
    a, b, suf, n = pair
    sa, sb = _mask_score(root, a, folders[a], volumes), _mask_score(root, b, folders[b], volumes)
    found = [f"{n} pairs: {a}/ with {b}/ (file stems{' + ' + repr(suf) if suf else ''})"]
    image_dir, mask_dir = a, b
    if suf == "" and sa > sb:  # the pixels say a holds the masks: its name lies
        image_dir, mask_dir = b, a
        found.append(f"{a}/ holds the masks (its files have few grey levels) and {b}/ the images, whatever their names say")
    img_ext = Counter(ext_of(f) for f in folders[image_dir]).most_common(1)[0][0]
    mask_ext = Counter(ext_of(f) for f in folders[mask_dir]).most_common(1)[0][0]
    prefix = lambda d: "" if d in (".", "") else f"{d}/"  # noqa: E731
    images = f"{prefix(image_dir)}*{img_ext}"
    classes = _mask_classes(root, mask_dir, folders[mask_dir], volumes)
    todo = ["no patient/video information: each case is its own group; set data.options.group (regex, mapping file or numeric ranges) if cases share patients or videos"]
    if len(classes) > 2:
        todo.append(f"name the classes: the masks hold values up to {len(classes) - 1}, written as {', '.join(classes[1:])}")
    split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "stratify": False, "group_by": "volume" if volumes else "case"}
    if volumes:
        nifti = all(ext_of(f).lower().startswith(".nii") for fs in (folders[image_dir], folders[mask_dir]) for f in fs)
        reader = "nifti_pairs" if nifti else "volume_pairs"
        opts = {"images": images, "label": f"{prefix(mask_dir)}{{stem}}{suf}{mask_ext}", "slice_axis": 2}
        todo.append("check slice_axis (the stored axis the 2D network slices along; 2 = axial for most scans)")
        return Inferred(reader, opts, classes, "3d-slicewise", split, todo, found)
    opts = {"images": images, "masks": f"{prefix(mask_dir)}{{stem}}{suf}{mask_ext}", "id": "{stem}"}
    return Inferred("paired_images", opts, classes, "2d", split, todo, found)
