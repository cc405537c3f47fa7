"""Per-image metadata as columns, and the filters a query may put on it (pure numpy, no I/O).

Columns are parallel arrays in gallery order, so a filter is a few vectorised comparisons over the
whole gallery instead of a Python loop per image. An unknown value (NaN bbox, ``TIME_UNKNOWN``, a
``None`` sensor or footprint, a NaN property) never passes a filter on that field: a caller asking for
images of 2021 does not want images whose date nobody recorded.

Geometry follows GeoJSON (RFC 7946): ``[lon, lat]`` in WGS84; a bbox with west > east crosses the
antimeridian. ``intersects`` is answered by a shapely STRtree over the images' footprints (or their
bboxes where no footprint is known).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.validation import explain_validity

from rsir.index.columns import TIME_UNKNOWN, MetadataColumns
from rsir.model.errors import InvalidInputError

RANGE_OPS = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Filters:
    """Conditions an image must all meet; a ``None`` field puts no condition.

    ``bbox`` (west, south, east, north): the footprint intersects it (touching edges count; west > east
    crosses the antimeridian). ``time_from``/``time_to``: unix seconds, both inclusive. ``sensors``:
    any of them. ``tags``: all. ``intersects``: a GeoJSON geometry the footprint intersects.
    ``ranges``: ``{property: {"gte": 0, "lte": 20}}`` over numeric properties (gt/gte/lt/lte).
    ``scenes``: chips of any of these scenes.
    """

    bbox: tuple[float, float, float, float] | None = None
    time_from: int | None = None
    time_to: int | None = None
    sensors: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    intersects: Mapping[str, Any] | None = field(default=None, hash=False)
    ranges: Mapping[str, Mapping[str, float]] | None = field(default=None, hash=False)
    scenes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.bbox is not None:
            if len(self.bbox) != 4 or not all(math.isfinite(v) for v in self.bbox):
                raise InvalidInputError(f"bbox must be 4 finite numbers, got {self.bbox!r}")
            lon_min, lat_min, lon_max, lat_max = self.bbox
            if not (-180 <= lon_min <= 180 and -180 <= lon_max <= 180):
                raise InvalidInputError(f"bbox longitudes must lie in [-180, 180], got {self.bbox!r}")
            if not (-90 <= lat_min <= 90 and -90 <= lat_max <= 90):
                raise InvalidInputError(f"bbox latitudes must lie in [-90, 90], got {self.bbox!r}")
            if lat_min > lat_max:
                raise InvalidInputError(
                    f"bbox must be (west, south, east, north) with south <= north, got {self.bbox!r}"
                )
        if self.time_from is not None and self.time_to is not None and self.time_from > self.time_to:
            raise InvalidInputError(f"time_from ({self.time_from}) is after time_to ({self.time_to})")
        if self.intersects is not None:
            _ = self.geometry  # validated now, so a bad geometry is a 4xx before any search runs
        for prop, bounds in (self.ranges or {}).items():
            if not isinstance(bounds, Mapping) or not bounds or set(bounds) - set(RANGE_OPS):
                raise InvalidInputError(
                    f"range filter on {prop!r} must map some of {list(RANGE_OPS)} to numbers, got {bounds!r}"
                )
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in bounds.values()
            ):
                raise InvalidInputError(f"range filter on {prop!r} must give finite numbers, got {bounds!r}")
        if self.ranges is not None and not self.ranges:
            raise InvalidInputError("ranges filter is empty; omit it to put no condition")
        for name, values in (("sensors", self.sensors), ("tags", self.tags), ("scenes", self.scenes)):
            if values is None:
                continue
            if not values:
                raise InvalidInputError(f"{name} filter is an empty list; omit it to put no condition")
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise InvalidInputError(f"{name} filter must hold non-empty strings, got {values!r}")

    @cached_property
    def geometry(self) -> shapely.Geometry | None:
        """``intersects`` as a shapely geometry (``None`` without it)."""
        return None if self.intersects is None else parse_geometry(self.intersects)

    @property
    def is_empty(self) -> bool:
        """True when no field puts a condition (every image passes)."""
        return (
            self.bbox is None
            and self.time_from is None
            and self.time_to is None
            and self.sensors is None
            and self.tags is None
            and self.intersects is None
            and self.ranges is None
            and self.scenes is None
        )


def parse_geometry(doc: Mapping[str, Any]) -> shapely.Geometry:
    """A GeoJSON geometry as shapely, refused with the reason when malformed or invalid (open ring,
    too few positions, self-intersection, coordinates outside [-180, 180] x [-90, 90])."""
    if not isinstance(doc, Mapping) or "type" not in doc:
        raise InvalidInputError(
            f"intersects must be a GeoJSON geometry object with a 'type', got {doc!r:.80}"
        )
    kind = doc["type"]
    if kind == "GeometryCollection":
        parts = doc.get("geometries")
        if not isinstance(parts, list) or not parts:
            raise InvalidInputError("intersects: a GeometryCollection needs a non-empty 'geometries' list")
        return shapely.GeometryCollection([parse_geometry(p) for p in parts])
    coords = doc.get("coordinates")
    rings: list[Any] = []
    if kind == "Polygon" and isinstance(coords, list):
        rings = coords
    elif kind == "MultiPolygon" and isinstance(coords, list):
        rings = [r for poly in coords if isinstance(poly, list) for r in poly]
    for ring in rings:
        if not isinstance(ring, list) or len(ring) < 4:
            raise InvalidInputError(f"intersects: a {kind} ring needs at least 4 positions, got {ring!r:.80}")
        if ring[0] != ring[-1]:
            raise InvalidInputError(
                f"intersects: {kind} ring is open: its first position {ring[0]} "
                f"differs from its last {ring[-1]}"
            )
    try:
        geometry = shapely.geometry.shape(doc)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, shapely.errors.ShapelyError) as exc:
        raise InvalidInputError(f"intersects: not a GeoJSON geometry ({exc})") from exc
    if geometry.is_empty:
        raise InvalidInputError("intersects: the geometry is empty")
    west, south, east, north = geometry.bounds
    if (
        not all(math.isfinite(v) for v in geometry.bounds)
        or west < -180
        or east > 180
        or south < -90
        or north > 90
    ):
        raise InvalidInputError(
            f"intersects: coordinates must be [lon, lat] within [-180, 180] x [-90, 90], "
            f"got bounds {geometry.bounds}"
        )
    if not geometry.is_valid:
        raise InvalidInputError(f"intersects: invalid {kind}: {explain_validity(geometry)}")
    return geometry


def filter_mask(columns: MetadataColumns, filters: Filters) -> NDArray[np.bool_]:
    """``[N]`` bool: True where image ``i`` meets every condition of ``filters``."""
    mask = np.ones(len(columns), dtype=np.bool_)
    if filters.bbox is not None:
        west, south, east, north = filters.bbox
        # NaN compares False, so an unknown corner fails here without a separate check.
        lat = (columns.lat_min <= north) & (columns.lat_max >= south)
        mask &= lat & _lon_overlap(columns.lon_min, columns.lon_max, west, east)
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
    if filters.scenes is not None:
        if columns.scene is None:
            mask[:] = False
        else:
            mask &= np.isin(columns.scene, list(filters.scenes))
    for prop, bounds in (filters.ranges or {}).items():
        mask &= _in_range(columns, prop, bounds)
    if filters.geometry is not None:
        hits = np.zeros(len(columns), dtype=np.bool_)
        hits[columns.tree.query(filters.geometry, predicate="intersects")] = True
        mask &= hits
    return mask


def _in_range(columns: MetadataColumns, prop: str, bounds: Mapping[str, float]) -> NDArray[np.bool_]:
    values = columns.numeric.get(prop)
    if values is None:
        known = sorted(columns.numeric)
        raise InvalidInputError(f"no numeric property {prop!r} in this index (numeric properties: {known})")
    out = ~np.isnan(values)
    for op, limit in bounds.items():
        out &= {"gt": values > limit, "gte": values >= limit, "lt": values < limit, "lte": values <= limit}[
            op
        ]
    return out


def _lon_overlap(
    lo: NDArray[np.float64], hi: NDArray[np.float64], west: float, east: float
) -> NDArray[np.bool_]:
    """Whether each [lo, hi] longitude interval meets [west, east]; either side with west > east (lo >
    hi) crosses the antimeridian and is the union [west, 180] + [-180, east]."""

    def plain(a: NDArray[np.float64] | float, b: NDArray[np.float64] | float, w: float, e: float) -> Any:
        return (a <= e) & (b >= w)

    crossing = lo > hi
    if west <= east:
        straight = plain(lo, hi, west, east)
        wrapped = plain(lo, 180.0, west, east) | plain(-180.0, hi, west, east)
    else:
        straight = plain(lo, hi, west, 180.0) | plain(lo, hi, -180.0, east)
        wrapped = np.ones(lo.shape, np.bool_) & ~np.isnan(lo) & ~np.isnan(hi)  # both contain +-180
    out: NDArray[np.bool_] = np.where(crossing, wrapped, straight)
    return out
