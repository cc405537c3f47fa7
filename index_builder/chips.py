"""Cutting a scene into chips on a grid, and each chip's footprint in WGS84 (pure computation, no I/O).

Grid: TorchGeo's ``GridGeoSampler`` semantics in source pixels. A chip is ``size`` pixels a side
(``chip_size`` times ``gsd / native resolution`` when resampling to a target ground resolution), the
stride is ``round(size * (1 - overlap))``, and the last row and column are moved back to end at the
raster's edge, so every pixel is covered and no chip reads outside the raster. A scene smaller than a
chip is one chip of the whole scene. Chip ids are ``<scene id>/<row>_<col>`` (grid row and column),
stable across rebuilds with the same chip size, overlap and gsd.

Footprint: the window's outline through the scene's affine transform (``EDGE_POINTS`` points per edge,
so a long edge that bends in WGS84 stays close), reprojected with pyproj (``always_xy``: lon, lat). A
footprint crossing the antimeridian is split into a MultiPolygon at +-180 and its bbox has west > east
(GeoJSON's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from shapely import affinity
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from rsir.model.errors import DatasetError

EDGE_POINTS = 8


@dataclass(frozen=True)
class ChipConfig:
    """How scenes are cut: output side in pixels, overlap fraction, optional target ground resolution
    (metres or CRS units per pixel), and the largest fraction of nodata a kept chip may hold."""

    chip_size: int = 224
    overlap: float = 0.0
    gsd: float | None = None
    max_nodata: float = 0.5

    def __post_init__(self) -> None:
        if self.chip_size < 8:
            raise DatasetError(f"--chip-size must be at least 8 pixels, got {self.chip_size}")
        if not 0 <= self.overlap < 1:
            raise DatasetError(f"--overlap must lie in [0, 1), got {self.overlap}")
        if self.gsd is not None and not (math.isfinite(self.gsd) and self.gsd > 0):
            raise DatasetError(f"--gsd must be a positive number of metres, got {self.gsd}")
        if not 0 <= self.max_nodata <= 1:
            raise DatasetError(f"--max-nodata must lie in [0, 1], got {self.max_nodata}")


@dataclass(frozen=True)
class GridChip:
    row: int
    col: int
    window: tuple[int, int, int, int]  # col_off, row_off, width, height in source pixels


def source_size(config: ChipConfig, pixel_metres: float) -> int:
    """A chip's side in source pixels for a scene of ``pixel_metres`` ground resolution."""
    if config.gsd is None or not math.isfinite(pixel_metres) or pixel_metres <= 0:
        return config.chip_size
    return max(1, round(config.chip_size * config.gsd / pixel_metres))


def axis_offsets(length: int, size: int, stride: int) -> list[int]:
    """Chip starts along one axis: every ``stride`` pixels, the last one ending at the edge."""
    if length <= size:
        return [0]
    n = math.ceil((length - size) / stride) + 1
    return [min(i * stride, length - size) for i in range(n)]


def grid(width: int, height: int, size: int, overlap: float) -> list[GridChip]:
    """The chips of a ``width`` x ``height`` raster, row by row."""
    stride = max(1, round(size * (1 - overlap)))
    cols, rows = axis_offsets(width, size, stride), axis_offsets(height, size, stride)
    return [
        GridChip(r, c, (x, y, min(size, width), min(size, height)))
        for r, y in enumerate(rows)
        for c, x in enumerate(cols)
    ]


def footprints(
    crs: str,
    transform: tuple[float, float, float, float, float, float],
    windows: list[tuple[int, int, int, int]],
) -> list[BaseGeometry]:
    """WGS84 footprints of pixel ``windows`` of a raster with ``crs`` and affine ``transform``."""
    if not windows:
        return []
    try:
        to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    except Exception as exc:  # pyproj.exceptions.CRSError and kin
        raise DatasetError(f"unknown CRS {crs[:80]!r} ({exc})") from exc
    t = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    # The outline counter-clockwise in pixel space (x right, y down): top-left, down the left edge,
    # along the bottom, up the right edge, back along the top.
    u = np.concatenate([np.zeros_like(t), t, np.ones_like(t), 1 - t])
    v = np.concatenate([t, np.ones_like(t), 1 - t, np.zeros_like(t)])
    w = np.asarray(windows, np.float64)
    px = w[:, 0:1] + u[None, :] * w[:, 2:3]
    py = w[:, 1:2] + v[None, :] * w[:, 3:4]
    a, b, c, d, e, f = transform
    x, y = a * px + b * py + c, d * px + e * py + f
    lon, lat = to_wgs84.transform(x.ravel(), y.ravel())
    lon, lat = np.asarray(lon).reshape(x.shape), np.asarray(lat).reshape(y.shape)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise DatasetError("footprint does not reproject to WGS84 (outside the CRS's area of use)")
    return [polygon(lon[i], lat[i]) for i in range(len(windows))]


def polygon(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> BaseGeometry:
    """An outline in degrees as a counter-clockwise Polygon, split at the antimeridian when it crosses."""
    lon = (lon + 180.0) % 360.0 - 180.0  # a CRS in degrees may run past 180 (e.g. 179.5 .. 180.5)
    lon = np.where((lon == -180.0) & (np.max(lon) > 0), 180.0, lon)
    if lon.max() - lon.min() <= 180:
        return orient(shapely.Polygon(np.column_stack([lon, lat])), 1.0)
    # Crossing: unwrap to 0..360, cut at 180 and bring the eastern part back to -180..0.
    ring = shapely.Polygon(np.column_stack([np.where(lon < 0, lon + 360, lon), lat]))
    west = shapely.intersection(ring, shapely.box(0, -90, 180, 90))
    east = affinity.translate(shapely.intersection(ring, shapely.box(180, -90, 360, 90)), -360)
    parts = [orient(p, 1.0) for g in (west, east) for p in shapely.get_parts(g)]
    return shapely.MultiPolygon([p for p in parts if isinstance(p, shapely.Polygon) and not p.is_empty])


def bbox(geometry: BaseGeometry) -> tuple[float, float, float, float]:
    """(west, south, east, north); a footprint split at the antimeridian has west > east."""
    parts = list(shapely.get_parts(geometry))
    west_of_180 = [p for p in parts if p.bounds[2] >= 180 - 1e-9 and p.bounds[0] > 0]
    east_of_180 = [p for p in parts if p.bounds[0] <= -180 + 1e-9 and p.bounds[2] < 0]
    lon_min, lat_min, lon_max, lat_max = geometry.bounds
    if west_of_180 and east_of_180 and len(parts) == len(west_of_180) + len(east_of_180):
        lon_min = min(p.bounds[0] for p in west_of_180)
        lon_max = max(p.bounds[2] for p in east_of_180)
    return (lon_min, lat_min, lon_max, lat_max)
