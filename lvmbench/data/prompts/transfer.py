"""Prompts in and out: lvmbench's own prompt files and SAM-Med2D's saved prompt JSON, and the
checks an imported prompt must pass against the masks it is for.

SAM-Med2D (``test.py``, written as ``<image_size>_prompt.json`` and read back with
``--prompt_path``): ``{"<mask file name>": {"boxes": [[x0, y0, x1, y1]], "point_coords": [[x, y],
...], "point_labels": [1, ...]}}`` in pixels of its ``image_size`` grid (256 by default); with one
point, ``squeeze`` leaves ``[[x, y]]`` and ``[l]``, with more ``[[[x, y], ...]]`` and ``[[l, ...]]``:
both are read. Its keys are mask file names; here a key may be the case id, ``<case id>#<slice>``
for a slice of a volume, or the case's mask file name. Exported keys are the case id (and
``#<slice>``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lvmbench.data.prompts.items import DIGITS, ItemPrompt
from lvmbench.errors import DataError

Key = tuple[str, int]  # (case id, slice; -1 for a 2D image)


def item_name(key: Key) -> str:
    case, sl = key
    return case if sl < 0 else f"{case}#{sl}"


def _flat_points(coords: Any, labels: Any) -> tuple[list[list[float]], list[int]]:
    pts = np.asarray(coords if coords is not None else [], dtype=np.float64).reshape(-1, 2)
    lab = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    if len(pts) != len(lab):
        raise ValueError(f"{len(pts)} point(s) but {len(lab)} label(s)")
    return pts.tolist(), lab.tolist()


def read_sam_med2d(path: Path, aliases: dict[str, Key], scale: float) -> list[ItemPrompt]:
    """Items of a SAM-Med2D prompt JSON (coordinates times ``scale`` to the rule's grid)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read the prompt file ({e.__class__.__name__}: {e})", path=path, fix="pass a SAM-Med2D <size>_prompt.json or an lvmbench prompt file") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise DataError("not a SAM-Med2D prompt file (a mapping of mask names to {boxes, point_coords, point_labels})", path=path, fix="pass a SAM-Med2D <size>_prompt.json or an lvmbench prompt file")
    out = []
    for name, v in doc.items():
        key = aliases.get(name)
        if key is None:
            raise DataError(f"unknown case id '{name}': no image of the task's test split has that id or mask file name", path=path, fix="import prompts made on this task's test split (keys: case ids, <case>#<slice> or mask file names)")
        boxes = v.get("boxes") or []
        flat = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
        if len(flat) > 1:
            raise DataError(f"'{name}' has {len(flat)} boxes; one prompt box per image is read", path=path, fix="keep one box per image (the prompted object's)")
        try:
            pts, labels = _flat_points(v.get("point_coords"), v.get("point_labels"))
        except ValueError as e:
            raise DataError(f"'{name}': {e}", path=path, fix="give one label per point") from None
        out.append(ItemPrompt(case=key[0], slice=None if key[1] < 0 else key[1], box=(flat[0] * scale).tolist() if len(flat) else None,
                              points=[[x * scale, y * scale] for x, y in pts], labels=labels))
    return out


def sam_med2d_doc(items: list[ItemPrompt], scale: float) -> dict[str, Any]:
    """SAM-Med2D's prompt JSON of prompted items (coordinates times ``scale``)."""
    out: dict[str, Any] = {}
    for it in sorted(items, key=ItemPrompt.key):
        if not it.prompted:
            continue
        r = lambda v: round(float(v) * scale, DIGITS)
        out[item_name(it.key())] = {
            "boxes": [[r(v) for v in it.box]] if it.box is not None else [],
            "point_coords": [[r(x), r(y)] for x, y in it.points],
            "point_labels": [int(v) for v in it.labels],
        }
    return out


def check_items(path: Path, part: str, items: list[ItemPrompt], objects: dict[Key, np.ndarray]) -> None:
    """Imported prompts against the objects (R x R masks) of one part: every item known, every
    prompted item present, boxes touching their object, positive points on it and negative ones
    off it. The first problem is raised as one line naming the file, the case and the fix."""
    seen = set()
    for it in items:
        key = it.key()
        name = item_name(key)
        obj = objects.get(key)
        if obj is None:
            raise DataError(f"unknown case id '{name}' in part '{part}' (not an image of the task's {part} split)", path=path, fix=f"import prompts made on this task's {part} split")
        if key in seen:
            raise DataError(f"'{name}' has two prompts in part '{part}'", path=path, fix="keep one prompt per image")
        seen.add(key)
        size = obj.shape[-1]
        if it.box is not None and obj.any():
            x0, y0, x1, y1 = it.box
            xa, xb = max(0, math.floor(min(x0, x1))), min(size - 1, math.ceil(max(x0, x1)))
            ya, yb = max(0, math.floor(min(y0, y1))), min(size - 1, math.ceil(max(y0, y1)))
            if xa > xb or ya > yb or not obj[ya : yb + 1, xa : xb + 1].any():
                raise DataError(f"the box of '{name}' ({part}) misses its object", path=path, fix="check the file's coordinates (frame size, x/y order) and case ids")
        for (x, y), lab in zip(it.points, it.labels):
            xi, yi = round(x), round(y)
            if lab < 0:
                continue
            if not (0 <= xi < size and 0 <= yi < size):
                raise DataError(f"point ({x:g}, {y:g}) of '{name}' ({part}) lies outside the {size} px grid", path=path, fix="check the file's frame size (--frame)")
            if lab == 1 and not obj[yi, xi]:
                raise DataError(f"positive point ({x:g}, {y:g}) of '{name}' ({part}) lies outside the object's mask", path=path, fix="check the file's coordinates (frame size, x/y order) and case ids")
            if lab == 0 and obj[yi, xi]:
                raise DataError(f"negative point ({x:g}, {y:g}) of '{name}' ({part}) lies on the object", path=path, fix="check the point labels (1 = object, 0 = background)")
    for key, obj in objects.items():
        if key not in seen and (obj.any() or False):
            raise DataError(f"no prompt for '{item_name(key)}' of part '{part}'", path=path, fix=f"the file must prompt every image of the {part} split that shows the object")
