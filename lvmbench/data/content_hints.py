"""Does a file look like what its side of a pair claims? Folders whose names lie.

Publishers' copies get shuffled (an ``images/`` folder holding the masks, a ``masks/`` folder holding
the photographs); the readers pair files by templates whatever the folders are called, and these
checks tell ``verify`` when the sides look swapped: a "mask" with the grey levels of a photograph,
or an "image" holding two values only. Both are warnings: the user decides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvmbench.data.cases import Issue

# A mask's pixels sit at its extremes (0 and the foreground value, JPEG noise near both) or are
# small class indices; a photograph spreads over the mid-tones.
MID_TONE_SHARE = 0.25
MIN_LEVELS = 32

SWAP_FIX = "if the folders are swapped, exchange data.options.images and data.options.masks (the folder names need not say which side they hold)"


def looks_like_photo(mask: np.ndarray) -> tuple[bool, str]:
    """(True, why) when a decoded mask file has the grey levels of a photograph."""
    m = np.asarray(mask)
    if m.size == 0 or m.max() <= 0:
        return False, ""
    levels = len(np.unique(m)) if m.dtype != np.uint8 else int(np.count_nonzero(np.bincount(m.ravel(), minlength=256)))
    top = float(m.max())
    mid = float(np.mean((m > 0.15 * top) & (m < 0.85 * top)))
    if levels >= MIN_LEVELS and mid >= MID_TONE_SHARE:
        return True, f"{levels} grey levels, {100 * mid:.0f}% of pixels mid-grey"
    return False, ""


def looks_binary(image: np.ndarray) -> tuple[bool, str]:
    """(True, why) when a decoded image holds two values, 0 and one other (a mask), or nearly so
    (a JPEG-compressed 0/255 mask: all but a sliver of pixels near black or white)."""
    a = np.asarray(image)
    if a.size == 0 or a.dtype != np.uint8:
        return False, ""
    counts = np.bincount(a.ravel(), minlength=256)
    values = np.flatnonzero(counts)
    if len(values) <= 2 and values[0] == 0 and values[-1] > 0:
        return True, "only the values " + " and ".join(str(int(v)) for v in values)
    mid = counts[16:240].sum() / a.size
    if mid < 0.02 and counts[:16].any() and counts[240:].any():
        return True, f"{100 * (1 - mid):.1f}% of its values near black or white"
    return False, ""


def swapped_sides(image_path: Path, image: np.ndarray, mask_path: Path, mask: np.ndarray) -> list[Issue]:
    """Warnings for a pair whose image looks like a mask or whose mask looks like a photograph."""
    out = []
    photo, why = looks_like_photo(mask)
    if photo:
        out.append(Issue(str(mask_path), f"this mask looks like a photograph ({why}); paired with image {image_path.name}", SWAP_FIX, fatal=False))
    binary, why = looks_binary(image)
    if binary:
        out.append(Issue(str(image_path), f"this image looks like a mask ({why})", SWAP_FIX, fatal=False))
    return out
