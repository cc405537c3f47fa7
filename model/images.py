"""Decoding image files and uploads to RGB, with the checks a batch job and a public endpoint need.

Rule for non-8-bit or multi-band rasters (16-bit, float, GeoTIFF tiles with 4+ bands): take bands
1, 2, 3 as R, G, B (a 1- or 2-band raster repeats band 1 as grey), then stretch each band linearly
from its 2nd to its 98th percentile onto 0..255. Satellite bands rarely use their full range, so a
plain cast would give black tiles. Plain 8-bit L/RGB/RGBA/P images are only converted to RGB.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from rsir.model.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; above this a tile is a mistake or a decompression bomb
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def decode_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file path or raw bytes to an RGB PIL image.

    Raises :class:`ImageDecodeError` with the reason for empty, truncated, oversized or non-image input.
    """
    label = str(source) if isinstance(source, Path) else "upload"
    data = source.read_bytes() if isinstance(source, Path) else source
    if not data:
        raise ImageDecodeError(f"{label}: empty file (0 bytes)")
    if data[:4] in _TIFF_MAGIC:
        return _decode_tiff(data, label, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_size(img.size[0], img.size[1], label, max_pixels)
            img.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"{label}: image too large, over the limit of decodable pixels ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError(f"{label}: not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports truncation/corruption this way
        raise ImageDecodeError(f"{label}: corrupt or truncated image ({exc})") from exc
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(array_to_rgb(np.asarray(img)))
    return img.convert("RGB")


def array_to_rgb(array: NDArray[np.generic]) -> NDArray[np.uint8]:
    """``[H,W]`` or ``[H,W,C]`` raster of any dtype -> ``[H,W,3]`` uint8 by the module's band rule."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] == 0:
        raise ImageDecodeError(f"raster of shape {array.shape} is not an image")
    bands = [0, 1, 2] if array.shape[2] >= 3 else [0, 0, 0]
    picked = array[:, :, bands]
    if picked.dtype == np.uint8:
        return np.ascontiguousarray(picked)
    out = np.empty(picked.shape, dtype=np.uint8)
    for c in range(3):
        band = picked[:, :, c].astype(np.float64)
        finite = band[np.isfinite(band)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 0.0)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        stretched = np.nan_to_num((band - lo) * scale, nan=0.0)
        out[:, :, c] = np.clip(stretched, 0, 255).astype(np.uint8)
    return out


def _decode_tiff(data: bytes, label: str, max_pixels: int) -> Image.Image:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            separate = len(page.shape) == 3 and page.planarconfig == 2  # planes stored as [C, H, W]
            height, width = page.shape[1:3] if separate else page.shape[:2]
            _check_size(int(width), int(height), label, max_pixels)
            array = page.asarray()
            if separate:
                array = np.moveaxis(array, 0, -1)
    except ImageDecodeError:
        raise
    except Exception as exc:  # tifffile raises assorted types for corrupt files
        raise ImageDecodeError(f"{label}: corrupt or truncated TIFF ({type(exc).__name__}: {exc})") from exc
    return Image.fromarray(array_to_rgb(array))


def _check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{label}: image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
