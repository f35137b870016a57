"""Decoding image files into arrays, with one clear error per unreadable file.

Every file is decoded as a viewer shows it: the EXIF/TIFF orientation tag is applied (images and
masks alike, so an image rotated by its camera stays aligned with a mask drawn on the displayed
image). A file whose header claims more than ``LVMBENCH_MAX_IMAGE_PIXELS`` pixels (default
150 million; ``0`` = no limit) is refused before anything is decoded: a few hundred KB of PNG can
claim gigapixels. Float images with NaN/inf pixels are refused rather than silently zeroed.

TIFFs PIL cannot decode (more than one sample per pixel beyond RGB/RGBA, float colour, codecs PIL
lacks) are read with tifffile: samples 1 (grey), 2 (grey + alpha), 3 (RGB), 4 and more (the first
three samples as RGB); 16-bit and float pixels are windowed min..max to 0-255 as PIL's 16-bit greys
are. An error says "cannot decode" only after every decoder failed.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from lvmbench.errors import DataError, UserError

DEFAULT_MAX_IMAGE_PIXELS = 150_000_000  # 12k x 12k; the largest LVM-Med images (ISIC) are ~30M
MAX_PIXELS_ENV = "LVMBENCH_MAX_IMAGE_PIXELS"
_ORIENTATION = 0x0112
# read_image enforces the limit itself with a one-line error; PIL's warning would only repeat it.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def max_image_pixels() -> int | None:
    """The pixel limit (``$LVMBENCH_MAX_IMAGE_PIXELS``, default 150M); None when set to 0."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        n = int(float(raw))
    except ValueError:
        raise UserError(f"{MAX_PIXELS_ENV}={raw!r} is not a number", fix=f"set {MAX_PIXELS_ENV} to a pixel count (0 = no limit)") from None
    return None if n <= 0 else n


def _apply_limit() -> int | None:
    limit = max_image_pixels()
    # PIL's own guard (an error above twice this) then protects every other Image.open too
    Image.MAX_IMAGE_PIXELS = limit
    return limit


def _check_pixels(w: int, h: int, path: Path, limit: int | None) -> None:
    if limit is not None and w * h > limit:
        raise DataError(
            f"image header claims {w}x{h} = {w * h} pixels, more than the limit of {limit} (a decompression bomb?)",
            path=path,
            fix=f"if the image is genuine, raise the limit: {MAX_PIXELS_ENV}={w * h} (0 = no limit)",
        )


def _bomb(path: Path, e: Exception, limit: int | None) -> DataError:
    """PIL refused the header itself (beyond twice ``Image.MAX_IMAGE_PIXELS``): the same line."""
    m = re.search(r"\((\d+) pixels\)", str(e))  # "Image size (N pixels) exceeds limit of ..."
    n = m.group(1) if m else "too many"
    return DataError(
        f"image header claims {n} pixels, more than the limit of {limit} (a decompression bomb?)",
        path=path,
        fix=f"if the image is genuine, raise the limit: {MAX_PIXELS_ENV}={n if m else 'N'} (0 = no limit)",
    )


def _oriented(im: Image.Image) -> Image.Image:
    """The decoded image as a viewer shows it (EXIF/TIFF orientation applied)."""
    try:
        if im.getexif().get(_ORIENTATION, 1) in (1, None):
            return im
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        return im
    return ImageOps.exif_transpose(im)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) as decoded by ``read_image`` (orientation applied), from the header only."""
    p = Path(path)
    limit = _apply_limit()
    try:
        with Image.open(p) as im:
            w, h = im.size
            try:
                if im.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                    w, h = h, w
            except Exception:  # noqa: BLE001
                pass
    except Image.DecompressionBombError as e:
        raise _bomb(p, e, limit) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        if _is_tiff(p):
            return _tiff_page(p, msg)[1][:2]
        raise DataError(f"unreadable or truncated image ({msg[:100]})", path=p, fix="re-download or re-export this file") from None
    return h, w


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _is_tiff(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def _tiff_page(p: Path, pil_error: str, decode: bool = False) -> tuple[np.ndarray | None, tuple[int, ...]]:
    """(pixels with samples last or None, (h, w[, samples])) of the first page, through tifffile."""
    quiet = logging.getLogger("tifffile")
    level, quiet.level = quiet.level, logging.CRITICAL  # its warnings would repeat our one line
    try:
        with tifffile.TiffFile(p) as tf:
            page = tf.pages[0]
            axes, shape = page.axes, tuple(int(s) for s in page.shape)
            if "Y" not in axes or "X" not in axes:
                raise ValueError(f"page axes {axes} hold no image plane")
            order = [axes.index("Y"), axes.index("X")] + [i for i, a in enumerate(axes) if a not in "YX"]
            dims = tuple(shape[i] for i in order)
            _check_pixels(dims[1], dims[0], p, _apply_limit())
            arr = None
            if decode:
                arr = np.transpose(page.asarray(), order)
                arr = arr.reshape(dims[0], dims[1], -1) if arr.ndim > 2 else arr
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many types (TiffFileError, ValueError, codec errors)
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise DataError(
            f"unreadable or truncated image: cannot decode it (PIL: {pil_error[:80]}; tifffile: {msg[:80]})",
            path=p,
            fix="re-download or re-export this file",
        ) from None
    finally:
        quiet.level = level
    return arr, dims


def _tiff_image(p: Path, pil_error: str, mode: str | None) -> np.ndarray:
    """``read_image`` of a TIFF only tifffile decodes."""
    arr, _ = _tiff_page(p, pil_error, decode=True)
    assert arr is not None
    arr = _finite(arr, p)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3:
        arr = arr[..., :1] if arr.shape[2] == 2 else arr[..., :3] if arr.shape[2] >= 3 else arr
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
    if mode is None:
        return np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr.astype(np.float32))
    if mode == "RGB" and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif mode == "L" and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    return np.ascontiguousarray(arr)


def _finite(a: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise DataError(f"{bad} NaN/inf pixels in a floating-point image ({a.size} in all)", path=path, fix="re-export the image with finite values (e.g. fill the NaNs) or remove the case")
    return a


class _PILCannot(Exception):
    """PIL could not decode the file (another decoder may)."""


def _pil(p: Path) -> Image.Image:
    """The decoded file (pixel limit checked from the header first, orientation applied); a file
    PIL cannot decode raises ``_PILCannot`` (another decoder may)."""
    if not p.is_file():
        raise DataError("file not found", path=p, fix="restore the file or remove the case from the dataset")
    limit = _apply_limit()
    try:
        with Image.open(p) as im:
            _check_pixels(*im.size, p, limit)
            im.load()
            return _oriented(im)
    except Image.DecompressionBombError as e:
        raise _bomb(p, e, limit) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _PILCannot(str(e).splitlines()[0] if str(e) else e.__class__.__name__) from None


def _decoded(p: Path, mode: str | None) -> Image.Image | np.ndarray:
    """PIL's image, else (a TIFF) tifffile's array, else one DataError naming both failures."""
    try:
        return _pil(p)
    except _PILCannot as e:
        if _is_tiff(p):
            return _tiff_image(p, str(e), mode)
        raise DataError(f"unreadable or truncated image ({str(e)[:100]})", path=p, fix="re-download or re-export this file") from None


def read_image(path: str | Path, mode: str | None = "RGB") -> np.ndarray:
    """Decode a PNG/JPEG/GIF/TIFF/BMP file. ``mode`` 'RGB' -> HxWx3 uint8, 'L' -> HxW uint8,
    None -> as stored (palette images converted to 'L')."""
    p = Path(path)
    im = _decoded(p, mode)
    if isinstance(im, np.ndarray):
        return im
    if mode is None:
        arr = _finite(np.asarray(im.convert("L") if im.mode == "P" else im), p)
    elif im.mode.startswith(("I", "F")):
        # 16-bit/float greyscale: PIL's convert() would clip to 255, so window min..max
        gray = _to_uint8(_finite(np.asarray(im), p).astype(np.float32))
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2) if mode == "RGB" else gray)
    else:
        try:
            arr = np.asarray(im.convert(mode))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot convert the image to {mode} ({str(e)[:100]})", path=p, fix="re-export this file as an ordinary 8-bit image") from None
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


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file -> HxW integer array of its stored values (no rescaling), for label readers.

    Grey values stay as stored (0/255 or 0/1 or class indices; 16-bit values are not stretched);
    a palette image gives its palette's grey levels when the palette is grey, else its indices
    (VOC-style class masks); colour masks give the brightest channel; alpha is ignored (an opaque
    alpha channel would otherwise read as foreground everywhere); float masks are rounded.
    """
    p = Path(path)
    im = _decoded(p, None)
    if isinstance(im, np.ndarray):
        arr = im.max(axis=2) if im.ndim == 3 else im
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.rint(arr)
        return np.ascontiguousarray(arr.astype(np.int64) if arr.dtype != np.uint8 else arr)
    if im.mode == "P":
        idx = np.asarray(im)
        pal = np.asarray(im.getpalette() or [], np.int64).reshape(-1, 3)
        used = np.unique(idx)
        if len(pal) > int(used.max()) and (pal[used] == pal[used][:, :1]).all():
            return pal[:, 0][idx]  # a grey palette: its levels are the stored values
        return idx.astype(np.int64)
    if im.mode in ("LA", "La"):
        im = im.convert("L")
    elif im.mode not in ("1", "L", "RGB", "F") and not im.mode.startswith("I"):
        im = im.convert("RGB")  # RGBA (alpha dropped), PA, CMYK, YCbCr
    arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(_finite(arr, p))
    return np.ascontiguousarray(arr.astype(np.int64) if arr.dtype != np.uint8 else arr)
