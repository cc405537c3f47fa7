"""Longitudes around the antimeridian (pure shapely): making a footprint's longitudes continuous,
cutting it at 180 degrees, and the smallest bbox around boxes that may cross it (RFC 7946 3.1.9, 5.2).

A footprint may come crossing the antimeridian in either of the two ways a reprojection leaves it:
with longitudes past 180 (179.5 .. 180.5, "unwrapped"), or wrapped (179.5 .. -179.5, so seeming to
span more than 180 degrees). One chip never spans more than 180 degrees of longitude, so a polygon
that seems to is read as crossing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.affinity import translate
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry


def unwrap(geometry: BaseGeometry) -> BaseGeometry:
    """``geometry`` with continuous longitudes in [-180, 540): a crossing one reaches past 180 on its
    eastern side instead of jumping to -180; one wholly outside [-180, 180] is moved by 360 into it."""
    if geometry.is_empty:
        return geometry
    if _spans(geometry) > 180:  # wrapped across the antimeridian: lift the western half by 360
        geometry = shapely.transform(geometry, _lift_negative)
    if isinstance(geometry, MultiPolygon):  # parts cut at 180 become one again
        geometry = shapely.union_all(geometry.geoms)
    west = geometry.bounds[0]
    if west >= 180:
        return translate(geometry, xoff=-360)
    if west < -180:  # below -180: one convention, crossing is expressed past +180
        return translate(geometry, xoff=360)
    return geometry


def split(geometry: BaseGeometry) -> BaseGeometry:
    """An unwrapped geometry cut at the antimeridian, its part past 180 moved back by 360 (a
    MultiPolygon for polygons); one that does not reach past 180 is returned as it is."""
    if geometry.bounds[2] <= 180:
        return geometry
    west = geometry.intersection(box(-180, -90, 180, 90))
    east = translate(geometry.intersection(box(180, -90, 540, 90)), xoff=-360)
    if isinstance(geometry, Polygon | MultiPolygon):
        return MultiPolygon(polygons(west) + polygons(east))
    return shapely.union(west, east)


def bbox(geometry: BaseGeometry) -> list[float]:
    """``[west, south, east, north]`` of an unwrapped geometry; west > east when it crosses."""
    west, south, east, north = geometry.bounds
    return [west, south, east - 360 if east > 180 else east, north]


def union_bbox(boxes: Iterable[Sequence[float]]) -> list[float]:
    """The smallest bbox holding all ``boxes`` (each may cross, west > east): around the circle of
    longitudes, the complement of the widest stretch that no box covers."""
    intervals, south, north = [], 90.0, -90.0
    for west, s, east, n in boxes:
        south, north = min(south, s), max(north, n)
        if east < west:  # crossing: two intervals on [-180, 180]
            intervals += [(west, 180.0), (-180.0, east)]
        else:
            intervals.append((west, east))
    intervals.sort()
    merged: list[list[float]] = []
    for west, east in intervals:
        if merged and west <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], east)
        else:
            merged.append([west, east])
    # gap i lies before merged[i]; gap 0 runs from the last interval's end around to the first's start
    gaps = [merged[0][0] + 360 - merged[-1][1]]
    gaps += [merged[i][0] - merged[i - 1][1] for i in range(1, len(merged))]
    widest = int(np.argmax(gaps))
    if gaps[widest] <= 0:
        return [-180.0, south, 180.0, north]
    return [merged[widest][0], south, merged[widest - 1][1], north]


def polygons(geometry: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons inside ``geometry`` (an intersection may add lines or points)."""
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    return [p for g in getattr(geometry, "geoms", ()) for p in polygons(g)]


def _spans(geometry: BaseGeometry) -> float:
    west, _, east, _ = geometry.bounds
    return float(east - west)


def _lift_negative(xy: Any) -> Any:
    xy = np.array(xy, dtype=np.float64)
    xy[xy[:, 0] < 0, 0] += 360
    return xy
