"""Per-image metadata as columns in gallery order (the in-memory form of a version's metadata.parquet).

An unknown value is NaN (bbox, numeric properties), ``TIME_UNKNOWN`` (time) or ``None`` (sensor,
footprint, scene); filters over these columns live in :mod:`rsir.search.filters`. A bbox whose west is
greater than its east crosses the antimeridian (GeoJSON's convention).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError

TIME_UNKNOWN = int(np.iinfo(np.int64).min)


@dataclass(frozen=True)
class MetadataColumns:
    """Metadata of ``n`` images: bbox corners in degrees (NaN: unknown), ``time`` in unix seconds
    (``TIME_UNKNOWN``: unknown), ``sensor`` (``None``: unknown), ``tags``, and ``extra`` string columns.

    Chips of georeferenced scenes add ``footprint`` (shapely geometries in WGS84, ``None``: unknown),
    ``scene`` (the scene's id), ``window`` (``[N,4]`` col_off, row_off, width, height in the scene's
    pixels; -1: not a chip) and ``numeric`` float columns (``eo:cloud_cover``, ``gsd``...; NaN:
    unknown). A version written before scenes has none of these: they load all unknown.
    """

    lon_min: NDArray[np.float64]
    lat_min: NDArray[np.float64]
    lon_max: NDArray[np.float64]
    lat_max: NDArray[np.float64]
    time: NDArray[np.int64]
    sensor: NDArray[np.object_]
    tags: list[frozenset[str]]
    extra: dict[str, NDArray[np.object_]] = field(default_factory=dict)
    footprint: NDArray[np.object_] | None = None  # None: no image has one
    scene: NDArray[np.object_] | None = None
    window: NDArray[np.int64] | None = None
    numeric: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.tags)
        if self.window is not None and self.window.shape != (n, 4):
            raise InvalidInputError(
                f"metadata column window has shape {self.window.shape}, expected ({n}, 4)"
            )
        arrays = {
            "lon_min": self.lon_min,
            "lat_min": self.lat_min,
            "lon_max": self.lon_max,
            "lat_max": self.lat_max,
            "time": self.time,
            "sensor": self.sensor,
            **{f"extra[{k!r}]": v for k, v in self.extra.items()},
            **{f"numeric[{k!r}]": v for k, v in self.numeric.items()},
            **({"footprint": self.footprint} if self.footprint is not None else {}),
            **({"scene": self.scene} if self.scene is not None else {}),
        }
        for name, array in arrays.items():
            if array.shape != (n,):
                raise InvalidInputError(f"metadata column {name} has shape {array.shape}, expected ({n},)")

    @staticmethod
    def empty(n: int) -> MetadataColumns:
        """``n`` images of which nothing is known (an index built without metadata)."""
        nan = np.full(n, np.nan)
        return MetadataColumns(
            lon_min=nan,
            lat_min=nan.copy(),
            lon_max=nan.copy(),
            lat_max=nan.copy(),
            time=np.full(n, TIME_UNKNOWN, np.int64),
            sensor=np.full(n, None, dtype=object),
            tags=[frozenset()] * n,
        )

    def __len__(self) -> int:
        return len(self.tags)

    @cached_property
    def shapes(self) -> NDArray[np.object_]:
        """What ``intersects`` tests per image: its footprint, else its bbox as a box (split in two when
        it crosses the antimeridian), else ``None``."""
        out = np.full(len(self), None, dtype=object)
        box = ~(
            np.isnan(self.lon_min) | np.isnan(self.lat_min) | np.isnan(self.lon_max) | np.isnan(self.lat_max)
        )
        for i in np.flatnonzero(box):
            out[i] = bbox_shape(self.lon_min[i], self.lat_min[i], self.lon_max[i], self.lat_max[i])
        if self.footprint is not None:
            known = np.fromiter((g is not None for g in self.footprint), np.bool_, len(self))
            out[known] = self.footprint[known]
        return out

    @cached_property
    def tree(self) -> shapely.STRtree:
        """A spatial index over :attr:`shapes` (built on the first ``intersects`` filter)."""
        return shapely.STRtree(self.shapes)

    def row(self, i: int) -> dict[str, Any]:
        """JSON-ready metadata of image ``i``; unknown fields are ``None`` (``tags``: ``[]``)."""
        box = [float(self.lon_min[i]), float(self.lat_min[i]), float(self.lon_max[i]), float(self.lat_max[i])]
        t = int(self.time[i])
        sensor = self.sensor[i]
        out: dict[str, Any] = {
            # A half-known box is no footprint a client could draw, so it is reported as unknown.
            "bbox": None if any(math.isnan(v) for v in box) else box,
            "time": None if t == TIME_UNKNOWN else format_time(t),
            "sensor": None if sensor is None else str(sensor),
            "tags": sorted(self.tags[i]),
        }
        for name, column in self.extra.items():
            if column[i] is not None:
                out[name] = str(column[i])
        # Scene fields only where known, so a tile's row is what it was before scenes existed.
        for name, values in self.numeric.items():
            if not math.isnan(values[i]):
                out[name] = float(values[i])
        if self.scene is not None and self.scene[i] is not None:
            out["scene"] = str(self.scene[i])
        if self.window is not None and self.window[i, 0] >= 0:
            out["window"] = [int(v) for v in self.window[i]]
        if self.footprint is not None and self.footprint[i] is not None:
            out["footprint"] = shapely.geometry.mapping(self.footprint[i])
        return out


def bbox_shape(west: float, south: float, east: float, north: float) -> shapely.Geometry:
    """A bbox as a geometry; west > east crosses the antimeridian and gives two boxes."""
    if west <= east:
        return shapely.box(west, south, east, north)
    return shapely.MultiPolygon([shapely.box(west, south, 180, north), shapely.box(-180, south, east, north)])


def format_time(unix: int) -> str:
    """Unix seconds as ISO 8601 UTC, ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
