"""A chip's pixels read from its scene (GeoTIFF / COG through rasterio), never from a stored copy.

Windowed reads only: memory follows the output size, not the scene's. ``out_shape`` makes GDAL read
from the COG's overview level nearest the output size, so a scene overview or a thumbnail of a large
window costs a few blocks, not the full-resolution pixels.

8-bit RGB, the same rule as the builder's reader (``index_builder.scenes``): uint8 bands as they are;
other types stretched per band from the scene's 2nd to 98th percentile of valid pixels (nodata and
masked pixels left out), estimated from a read of at most ``STATS_SIDE`` pixels a side. Invalid
pixels come out black. One function per use, so swapping in the builder's reader (same rule, recorded
bands and stretch) changes this module only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from index.originals import OriginalUnavailableError

STATS_SIDE = 1024
RGB = (1, 2, 3)


class ScenePixelsError(OriginalUnavailableError):
    """A scene cannot be read, or a recorded window no longer lies inside it."""


@dataclass(frozen=True)
class Stretch:
    """Per band (low, high) values mapped to 0 and 255; ``None`` for uint8 taken as it is."""

    bands: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class SceneInfo:
    width: int
    height: int
    count: int
    dtype: str


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(rows, cols)`` of a ``width`` x ``height`` area scaled to fit ``max_side`` (never enlarged)."""
    ratio = min(1.0, max_side / max(width, height))
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def scene_info(href: str) -> SceneInfo:
    with _open(href) as src:
        return SceneInfo(src.width, src.height, src.count, src.dtypes[0])


def read_rgb(
    href: str,
    window: tuple[int, int, int, int] | None,
    out_shape: tuple[int, int],
    bands: Sequence[int] = RGB,
    stretch: Stretch | None = None,
) -> NDArray[np.uint8]:
    """``[rows, cols, 3]`` uint8 of ``window`` (col_off, row_off, width, height; None: the whole
    scene) resampled to ``out_shape``. ``stretch=None`` estimates the scene's (see the module's doc)."""
    try:
        with _open(href) as src:
            if window is not None:
                _check_window(src, window)
            indexes = _indexes(src, bands)
            area = Window(*window) if window is not None else None
            resampling = _resampling(src, area, out_shape)
            data = src.read(indexes, window=area, out_shape=(3, *out_shape), resampling=resampling)
            valid = _valid(src, indexes, data, area, out_shape)
            rule = stretch if stretch is not None else estimate_stretch(src, indexes)
    except RasterioError as exc:
        raise ScenePixelsError(f"{href}: cannot be read ({exc})") from exc
    return _to_rgb(data, valid, rule)


def _open(href: str) -> rasterio.DatasetReader:
    try:
        return rasterio.open(href)
    except (RasterioError, OSError) as exc:
        raise ScenePixelsError(f"{href}: cannot be opened ({exc})") from exc


def _check_window(src: rasterio.DatasetReader, window: tuple[int, int, int, int]) -> None:
    col, row, width, height = window
    if col < 0 or row < 0 or width < 1 or height < 1 or col + width > src.width or row + height > src.height:
        raise ScenePixelsError(f"window {window} lies outside the {src.width} x {src.height} raster")


def _indexes(src: rasterio.DatasetReader, bands: Sequence[int]) -> list[int]:
    if src.count < 3:  # a single-band scene is shown grey
        return [1, 1, 1]
    if any(not 1 <= b <= src.count for b in bands) or len(bands) != 3:
        raise ScenePixelsError(f"bands {list(bands)} do not fit a raster of {src.count} bands")
    return list(bands)


def _resampling(src: rasterio.DatasetReader, area: Window | None, out_shape: tuple[int, int]) -> Resampling:
    rows = area.height if area is not None else src.height
    return Resampling.nearest if rows == out_shape[0] else Resampling.bilinear


def scene_stretch(href: str, bands: Sequence[int] = RGB) -> Stretch:
    """The scene's stretch (see the module's doc), estimated once per scene and band choice."""
    return _cached_stretch(href, tuple(bands))


@functools.lru_cache(maxsize=256)
def _cached_stretch(href: str, bands: tuple[int, ...]) -> Stretch:
    try:
        with _open(href) as src:
            return estimate_stretch(src, _indexes(src, bands))
    except RasterioError as exc:
        raise ScenePixelsError(f"{href}: cannot be read ({exc})") from exc


def estimate_stretch(src: rasterio.DatasetReader, indexes: list[int]) -> Stretch:
    if src.dtypes[0] == "uint8":
        return Stretch(None)
    shape = fit(src.width, src.height, STATS_SIDE)
    data = src.read(indexes, out_shape=(3, *shape), resampling=Resampling.nearest)
    valid = _valid(src, indexes, data, None, shape)
    lows_highs = []
    for band in data:
        values = band[valid]
        low, high = np.percentile(values, [2, 98]) if values.size else (0.0, 0.0)
        lows_highs.append((float(low), float(high)))
    return Stretch(tuple(lows_highs))


def _valid(
    src: rasterio.DatasetReader,
    indexes: list[int],
    data: NDArray[np.generic],
    area: Window | None,
    out_shape: tuple[int, int],
) -> NDArray[np.bool_]:
    """``[rows, cols]``: pixels valid in all three bands. GDAL's mask of a band without nodata or mask
    has no overviews (a read of it at any size walks the full-resolution raster), and a nodata mask
    is the data compared with the value: only a real mask band (internal or .msk) is read."""
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if all(f == [MaskFlags.all_valid] for f in flags):
        return np.ones(out_shape, np.bool_)
    if all(MaskFlags.nodata in f for f in flags) and src.nodata is not None:
        invalid = np.isnan(data) if np.isnan(src.nodata) else data == src.nodata
        return np.asarray(~np.any(invalid, axis=0), np.bool_)
    masks = src.read_masks(indexes, window=area, out_shape=(3, *out_shape))
    return np.asarray(np.all(masks > 0, axis=0), np.bool_)


def _to_rgb(data: NDArray[np.generic], valid: NDArray[np.bool_], stretch: Stretch) -> NDArray[np.uint8]:
    values = data.astype(np.float64)
    if stretch.bands is not None:
        low = np.array([b[0] for b in stretch.bands])[:, None, None]
        high = np.array([b[1] for b in stretch.bands])[:, None, None]
        values = (values - low) * (255.0 / np.where(high > low, high - low, np.inf))
    values[:, ~valid] = 0  # invalid pixels black (and NaN never reaches the cast)
    out = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0))
