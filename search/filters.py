"""Per-image metadata as columns, and the filters a query may put on it (pure numpy, no I/O).

Columns are parallel arrays in gallery order, so a filter is a few vectorised comparisons over the
whole gallery instead of a Python loop per image. An unknown value (NaN bbox, ``TIME_UNKNOWN``, a
``None`` sensor) never passes a filter on that field: a caller asking for images of 2021 does not
want images whose date nobody recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rsir.index.columns import TIME_UNKNOWN, MetadataColumns
from rsir.model.errors import InvalidInputError


@dataclass(frozen=True)
class Filters:
    """Conditions an image must all meet; a ``None`` field puts no condition.

    ``bbox`` (lon_min, lat_min, lon_max, lat_max): the footprint intersects it (touching edges count).
    ``time_from``/``time_to``: unix seconds, both inclusive. ``sensors``: any of them. ``tags``: all.
    """

    bbox: tuple[float, float, float, float] | None = None
    time_from: int | None = None
    time_to: int | None = None
    sensors: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.bbox is not None:
            if len(self.bbox) != 4 or not all(math.isfinite(v) for v in self.bbox):
                raise InvalidInputError(f"bbox must be 4 finite numbers, got {self.bbox!r}")
            lon_min, lat_min, lon_max, lat_max = self.bbox
            if not (-180 <= lon_min <= 180 and -180 <= lon_max <= 180):
                raise InvalidInputError(f"bbox longitudes must lie in [-180, 180], got {self.bbox!r}")
            if not (-90 <= lat_min <= 90 and -90 <= lat_max <= 90):
                raise InvalidInputError(f"bbox latitudes must lie in [-90, 90], got {self.bbox!r}")
            if lon_min > lon_max or lat_min > lat_max:
                raise InvalidInputError(
                    f"bbox must be (lon_min, lat_min, lon_max, lat_max) with min <= max, got {self.bbox!r}"
                )
        if self.time_from is not None and self.time_to is not None and self.time_from > self.time_to:
            raise InvalidInputError(f"time_from ({self.time_from}) is after time_to ({self.time_to})")
        for name, values in (("sensors", self.sensors), ("tags", self.tags)):
            if values is None:
                continue
            if not values:
                raise InvalidInputError(f"{name} filter is an empty list; omit it to put no condition")
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise InvalidInputError(f"{name} filter must hold non-empty strings, got {values!r}")

    @property
    def is_empty(self) -> bool:
        """True when no field puts a condition (every image passes)."""
        return (
            self.bbox is None
            and self.time_from is None
            and self.time_to is None
            and self.sensors is None
            and self.tags is None
        )


def filter_mask(columns: MetadataColumns, filters: Filters) -> NDArray[np.bool_]:
    """``[N]`` bool: True where image ``i`` meets every condition of ``filters``."""
    mask = np.ones(len(columns), dtype=np.bool_)
    if filters.bbox is not None:
        lon_min, lat_min, lon_max, lat_max = filters.bbox
        # NaN compares False, so an unknown corner fails here without a separate check.
        mask &= (
            (columns.lon_min <= lon_max)
            & (columns.lon_max >= lon_min)
            & (columns.lat_min <= lat_max)
            & (columns.lat_max >= lat_min)
        )
    if filters.time_from is not None or filters.time_to is not None:
        mask &= columns.time != TIME_UNKNOWN
        if filters.time_from is not None:
            mask &= columns.time >= filters.time_from
        if filters.time_to is not None:
            mask &= columns.time <= filters.time_to
    if filters.sensors is not None:
        any_of = np.zeros(len(columns), dtype=np.bool_)
        for sensor in set(filters.sensors):
            any_of |= columns.sensor == sensor  # elementwise on the object array; None never equals
        mask &= any_of
    if filters.tags is not None:
        need = frozenset(filters.tags)
        mask &= np.fromiter((need <= t for t in columns.tags), np.bool_, len(columns))
    return mask
