"""Decoding image files into arrays, with one clear error per unreadable file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lvmbench.errors import DataError

Image.MAX_IMAGE_PIXELS = None  # large fundus/X-ray files are legitimate


def read_image(path: str | Path, mode: str | None = "RGB") -> np.ndarray:
    """Decode a PNG/JPEG/GIF/TIFF/BMP file. ``mode`` 'RGB' -> HxWx3 uint8, 'L' -> HxW uint8,
    None -> as stored (palette images converted to 'L')."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", path=p, fix="restore the file or remove the case from the dataset")
    try:
        with Image.open(p) as im:
            im.load()
            if mode is None:
                if im.mode == "P":
                    im = im.convert("L")
                arr = np.asarray(im)
            else:
                if im.mode.startswith(("I", "F")):
                    # 16-bit/float greyscale: PIL's convert() would clip to 255, so window min..max
                    gray = _to_uint8(np.asarray(im).astype(np.float32))
                    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2) if mode == "RGB" else gray)
                arr = np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise DataError(f"unreadable or truncated image ({msg[:100]})", path=p, fix="re-download or re-export this file") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr.astype(np.float32))
    return np.ascontiguousarray(arr)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
