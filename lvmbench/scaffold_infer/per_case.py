"""One folder per case: ``case01/image.png + case01/mask.png`` and its common variants.

- fixed names in every folder: ``case01/image.png, case01/mask.png`` (KiTS: ``case_00000/imaging.nii.gz,
  case_00000/segmentation.nii.gz``);
- names built from the folder's name: ``case01/case01.png, case01/case01_mask.png`` (BraTS:
  ``BraTS19_x/BraTS19_x_flair.nii.gz, ..._seg.nii.gz``);
- sub-folders: ``case01/images/case01.png, case01/masks/case01.png``, or any number of mask files in
  ``case01/masks/`` (the 2018 Data Science Bowl: one file per nucleus, united into one mask).

A *role* is a file's path inside its case folder with the folder's name written ``{case}``
(``{case}_mask.png``; files of a sub-folder whose names do not follow the case are one role,
``masks/*.png``). Roles that most case folders have are the candidates; which one holds the masks is
decided by the pixels (few grey levels), with the file names only breaking ties.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lvmbench.scaffold_infer.common import IMAGE_EXT, VOLUME_EXT, Inferred, ext_of

MASK_WORDS = ("mask", "label", "seg", "gt", "ground", "annotation", "manual", "truth")
IMAGE_WORDS = ("image", "img", "imaging", "scan", "raw", "frame", "input", "orig", "ct", "mr", "t1", "t2", "flair", "photo")


def _files(folder: Path, exts: tuple[str, ...]) -> list[str]:
    """Paths relative to ``folder`` of the files with one of ``exts``, one sub-folder deep."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if not rel.parts else []
        out += [(rel / f).as_posix() for f in sorted(filenames) if ext_of(f).lower() in exts]
    return out


def _role(rel: str, case: str) -> str:
    folder, _, name = rel.rpartition("/")
    if case in name:
        name = name.replace(case, "{case}")
    elif folder:
        name = "*" + ext_of(name)  # a sub-folder of freely named files (one mask file per object)
    return f"{folder}/{name}" if folder else name


def _words(role: str, words: tuple[str, ...]) -> bool:
    parts = re.split(r"[^a-z0-9]+", role.lower().replace("{case}", " "))
    return any(p.startswith(w) for p in parts if p for w in words)


def find(root: Path, volumes: bool, mask_score, mask_classes) -> Inferred | None:
    """The per-case layout of ``root``, or None when its sub-folders are not cases.

    ``mask_score(root, folder, names, volumes)`` and ``mask_classes(...)`` are the pixel tests of
    :mod:`lvmbench.scaffold_infer.segmentation` (passed in, so the two modules import one way)."""
    exts = VOLUME_EXT if volumes else IMAGE_EXT
    cases = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(cases) < 3:
        return None
    roles: dict[str, dict[str, list[str]]] = {}
    for c in cases:
        for rel in _files(c, exts):
            roles.setdefault(_role(rel, c.name), {}).setdefault(c.name, []).append(f"{c.name}/{rel}")
    need = max(3, int(0.8 * len(cases)))
    common = {r: by for r, by in roles.items() if len(by) >= need}
    if not 2 <= len(common) <= 8:
        return None
    sample = {r: [files[0] for files in list(by.values())[:: max(1, len(by) // 6)]][:6] for r, by in common.items()}
    score = {r: mask_score(root, "", names, volumes) for r, names in sample.items()}
    single = [r for r, by in common.items() if all(len(f) == 1 for f in by.values())]
    mask = max(common, key=lambda r: (score[r], _words(r, MASK_WORDS), not _words(r, IMAGE_WORDS)))
    images = [r for r in single if r != mask]
    if not images or score[mask] <= min(score[r] for r in images):
        return None  # no role looks more like masks than another: not a layout this can tell
    image = min(images, key=lambda r: (score[r], not _words(r, IMAGE_WORDS), _words(r, MASK_WORDS), r))
    pattern = "(?P<case>[^/]+)/" + "(?P=case)".join(re.escape(p) for p in image.split("{case}"))
    opts: dict = {"images": "*/" + image.replace("{case}", "*"), "pattern": pattern, "id": "{case}"}
    n = len(common[image])
    found = [f"one folder per case ({len(cases)} folders, {n} with an image): image {image}, mask {mask} in each (the mask side told by its pixels)"]
    todo = ["no patient/video information: each case folder is its own group; set data.options.group (a template over {case}, a mapping file or numeric ranges) if cases share patients or videos"]
    others = sorted(r for r in common if r not in (image, mask))
    if others:
        todo.append(f"each case folder also holds {', '.join(others)}: the images are {image}; change data.options.images/pattern to use another")
    classes = mask_classes(root, "", sample[mask], volumes)
    if len(classes) > 2:
        todo.append(f"name the classes: the masks hold values up to {len(classes) - 1}, written as {', '.join(classes[1:])}")
    split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "stratify": False, "group_by": "volume" if volumes else "case"}
    if volumes:
        reader = "nifti_pairs" if all(ext_of(r).lower().startswith(".nii") for r in (image, mask)) else "volume_pairs"
        todo.append("check slice_axis (the stored axis the 2D network slices along; 2 = axial for most scans)")
        return Inferred(reader, {**opts, "label": "{case}/" + mask, "slice_axis": 2}, classes, "3d-slicewise", split, todo, found)
    return Inferred("paired_images", {**opts, "masks": "{case}/" + mask}, classes, "2d", split, todo, found)
