"""Per-image metadata as columns in gallery order (the in-memory form of a version's metadata.parquet).

An unknown value is NaN (bbox), ``TIME_UNKNOWN`` (time) or ``None`` (sensor); filters over these
columns live in :mod:`rsir.search.filters`.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError

TIME_UNKNOWN = int(np.iinfo(np.int64).min)


@dataclass(frozen=True)
class MetadataColumns:
    """Metadata of ``n`` images: bbox corners in degrees (NaN: unknown), ``time`` in unix seconds
    (``TIME_UNKNOWN``: unknown), ``sensor`` (``None``: unknown), ``tags``, and ``extra`` string columns.
    """

    lon_min: NDArray[np.float64]
    lat_min: NDArray[np.float64]
    lon_max: NDArray[np.float64]
    lat_max: NDArray[np.float64]
    time: NDArray[np.int64]
    sensor: NDArray[np.object_]
    tags: list[frozenset[str]]
    extra: dict[str, NDArray[np.object_]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.tags)
        arrays = {
            "lon_min": self.lon_min,
            "lat_min": self.lat_min,
            "lon_max": self.lon_max,
            "lat_max": self.lat_max,
            "time": self.time,
            "sensor": self.sensor,
            **{f"extra[{k!r}]": v for k, v in self.extra.items()},
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
        return out


def format_time(unix: int) -> str:
    """Unix seconds as ISO 8601 UTC, ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
