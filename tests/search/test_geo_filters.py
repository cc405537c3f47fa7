"""Geo filters over chips' metadata: intersects (STRtree) against a brute-force shapely check, bboxes
crossing the antimeridian against plain interval arithmetic, numeric ranges, scenes, bad geometry."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely

from rsir.index.columns import TIME_UNKNOWN, MetadataColumns
from rsir.model.errors import InvalidInputError
from rsir.search.filters import Filters, filter_mask


def _columns(
    boxes: list[tuple[float, float, float, float] | None],
    footprints: list[Any] | None = None,
    numeric: dict[str, list[float]] | None = None,
    scenes: list[str | None] | None = None,
) -> MetadataColumns:
    n = len(boxes)
    known = [b if b is not None else (math.nan,) * 4 for b in boxes]
    arr = np.asarray(known, dtype=np.float64).reshape(n, 4)
    return MetadataColumns(
        lon_min=arr[:, 0].copy(),
        lat_min=arr[:, 1].copy(),
        lon_max=arr[:, 2].copy(),
        lat_max=arr[:, 3].copy(),
        time=np.full(n, TIME_UNKNOWN, np.int64),
        sensor=np.full(n, None, dtype=object),
        tags=[frozenset()] * n,
        footprint=None if footprints is None else np.asarray([*footprints, None], dtype=object)[:-1],
        numeric={k: np.asarray(v, np.float64) for k, v in (numeric or {}).items()},
        scene=None if scenes is None else np.asarray([*scenes, None], dtype=object)[:-1],
    )


def _random_quads(n: int, seed: int) -> list[Any]:
    """Convex quadrilaterals (valid, like reprojected chips), one in five unknown."""
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    for _ in range(n):
        if rng.random() < 0.2:
            out.append(None)
            continue
        x, y = rng.uniform(-20, 20), rng.uniform(-20, 20)
        w, h = rng.uniform(0.1, 4, 2)
        skew = rng.uniform(-0.5, 0.5)
        out.append(shapely.Polygon([(x, y), (x + w, y + skew), (x + w + skew, y + h), (x + skew, y + h)]))
    return out


def test_intersects_equals_a_brute_force_shapely_check() -> None:
    quads = _random_quads(500, seed=0)
    boxes = [None if q is None else q.bounds for q in quads]
    columns = _columns(boxes, quads)
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(60):
        x, y = rng.uniform(-22, 18, 2)
        r = rng.uniform(0.5, 6)
        kind = rng.integers(3)
        if kind == 0:
            doc = {"type": "Point", "coordinates": [x, y]}
        elif kind == 1:
            doc = {"type": "LineString", "coordinates": [[x, y], [x + r, y + r / 2]]}
        else:
            ring = [[x, y], [x + r, y], [x + r / 2, y + r], [x, y]]
            doc = {"type": "Polygon", "coordinates": [ring]}
        query = shapely.geometry.shape(doc)
        expected = [q is not None and q.intersects(query) for q in quads]
        got = filter_mask(columns, Filters(intersects=doc))
        assert got.tolist() == expected, doc
        hits += sum(expected)
    assert hits > 50  # the queries do meet footprints (a check that only ever says "none" proves nothing)


def test_intersects_uses_the_bbox_where_no_footprint_is_known() -> None:
    # Image 0: footprint a thin diagonal strip; image 1: bbox only; image 2: nothing known.
    strip = shapely.Polygon([(0, 0), (0.1, 0), (1, 0.9), (1, 1), (0.9, 1), (0, 0.1)])
    columns = _columns([strip.bounds, (2.0, 2.0, 3.0, 3.0), None], [strip, None, None])
    corner = {"type": "Point", "coordinates": [0.95, 0.05]}  # inside the strip's bbox, outside the strip
    assert filter_mask(columns, Filters(intersects=corner)).tolist() == [False, False, False]
    inside_box = {"type": "Point", "coordinates": [2.5, 2.5]}
    assert filter_mask(columns, Filters(intersects=inside_box)).tolist() == [False, True, False]


def _lon_intervals(west: float, east: float) -> list[tuple[float, float]]:
    return [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]


def _bbox_reference(
    row: tuple[float, float, float, float] | None, q: tuple[float, float, float, float]
) -> bool:
    if row is None:
        return False
    if row[3] < q[1] or row[1] > q[3]:
        return False
    return any(
        a <= d and b >= c for a, b in _lon_intervals(row[0], row[2]) for c, d in _lon_intervals(q[0], q[2])
    )


def test_bbox_crossing_the_antimeridian_against_interval_arithmetic() -> None:
    rng = np.random.default_rng(3)
    boxes: list[tuple[float, float, float, float] | None] = []
    for _ in range(300):
        if rng.random() < 0.1:
            boxes.append(None)
            continue
        west = float(rng.integers(170, 181)) if rng.random() < 0.5 else float(rng.integers(-180, -170))
        east = west + float(rng.integers(0, 6))
        if east > 180:
            east -= 360  # crossing: west > east
        south = float(rng.integers(-5, 5))
        boxes.append((west, south, east, south + float(rng.integers(0, 3))))
    columns = _columns(boxes)
    for _ in range(200):
        west = float(rng.integers(165, 181))
        east = west + float(rng.integers(0, 12))
        if east > 180:
            east -= 360
        south = float(rng.integers(-6, 5))
        q = (west, south, east, south + float(rng.integers(0, 4)))
        expected = [_bbox_reference(b, q) for b in boxes]
        assert filter_mask(columns, Filters(bbox=q)).tolist() == expected, q


def test_antimeridian_hand_cases() -> None:
    columns = _columns([(179.0, 0.0, -179.0, 1.0), (0.0, 0.0, 1.0, 1.0), (-176.0, 0.0, -175.5, 1.0)])
    assert filter_mask(columns, Filters(bbox=(178.5, 0, 179.5, 1))).tolist() == [True, False, False]
    assert filter_mask(columns, Filters(bbox=(-179.5, 0, -178, 1))).tolist() == [True, False, False]
    assert filter_mask(columns, Filters(bbox=(170, 0, 175, 1))).tolist() == [False, False, False]
    assert filter_mask(columns, Filters(bbox=(175, 0, -175, 1))).tolist() == [True, False, True]


def test_numeric_ranges_scene_and_unknowns() -> None:
    columns = _columns(
        [None] * 5,
        numeric={"eo:cloud_cover": [0.0, 19.9, 20.0, 35.0, math.nan], "gsd": [10, 10, 30, 30, 10]},
        scenes=["a", "a", "b", None, "b"],
    )

    def mask(**kwargs: Any) -> list[bool]:
        return [bool(v) for v in filter_mask(columns, Filters(**kwargs))]

    assert mask(ranges={"eo:cloud_cover": {"lte": 20}}) == [True, True, True, False, False]
    assert mask(ranges={"eo:cloud_cover": {"lt": 20}}) == [True, True, False, False, False]
    assert mask(ranges={"eo:cloud_cover": {"gt": 0, "lte": 20}}) == [False, True, True, False, False]
    assert mask(ranges={"eo:cloud_cover": {"gte": 0}, "gsd": {"gte": 30}}) == [
        False,
        False,
        True,
        True,
        False,
    ]
    assert mask(scenes=("b",)) == [False, False, True, False, True]
    assert mask(scenes=("a", "b"), ranges={"gsd": {"lte": 10}}) == [True, True, False, False, True]
    with pytest.raises(InvalidInputError, match="no numeric property 'cloud'"):
        mask(ranges={"cloud": {"lte": 1}})
    # An index built before scenes: no scene column, so a scene filter passes nothing.
    assert filter_mask(_columns([None, None]), Filters(scenes=("a",))).tolist() == [False, False]


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            "Self-intersection",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "ring is open"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, "at least 4 positions"),
        ({"type": "Point", "coordinates": [200, 10]}, r"within \[-180, 180\]"),
        ({"type": "Point", "coordinates": [10, -95]}, r"within \[-180, 180\]"),
        ({"type": "Triangle", "coordinates": [0, 0]}, "not a GeoJSON geometry"),
        ({"coordinates": [0, 0]}, "with a 'type'"),
    ],
)
def test_invalid_geometry_is_refused_naming_the_problem(geometry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Filters(intersects=geometry)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ranges": {"gsd": {"lte": "x"}}}, "finite numbers"),
        ({"ranges": {"gsd": {"max": 3}}}, "must map some of"),
        ({"ranges": {}}, "empty"),
        ({"scenes": ()}, "empty list"),
    ],
)
def test_invalid_ranges_and_scenes_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Filters(**kwargs)
