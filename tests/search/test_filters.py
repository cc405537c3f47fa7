"""Metadata filters: the vectorised mask against a per-row Python reference, hand cases, validation."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest

from rsir.index.columns import TIME_UNKNOWN, MetadataColumns
from rsir.model.errors import InvalidInputError
from rsir.search.filters import Filters, filter_mask

SENSORS = ("s2", "wv3", "aerial")
TAGS = ("port", "ship", "road", "field")


def _columns(rows: list[dict[str, Any]]) -> MetadataColumns:
    """Columns from per-image dicts (missing key: unknown)."""

    def col(key: str) -> np.ndarray:
        return np.array([r.get(key, math.nan) for r in rows], dtype=np.float64)

    return MetadataColumns(
        lon_min=col("lon_min"),
        lat_min=col("lat_min"),
        lon_max=col("lon_max"),
        lat_max=col("lat_max"),
        time=np.array([r.get("time", TIME_UNKNOWN) for r in rows], dtype=np.int64),
        sensor=np.array([r.get("sensor") for r in rows] + [None], dtype=object)[:-1],
        tags=[frozenset(r.get("tags", ())) for r in rows],
    )


def _random_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Rows on a coarse grid (so that edges touch often), each field unknown one time in five."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {}
        if rng.random() > 0.2:
            lon, lat = (float(v) for v in rng.integers(-10, 10, 2))
            w, h = (float(v) for v in rng.integers(0, 4, 2))
            row |= {"lon_min": lon, "lat_min": lat, "lon_max": lon + w, "lat_max": lat + h}
        if rng.random() > 0.2:
            row["time"] = int(rng.integers(0, 20)) * 100
        if rng.random() > 0.2:
            row["sensor"] = SENSORS[rng.integers(len(SENSORS))]
        row["tags"] = {t for t in TAGS if rng.random() < 0.4}
        rows.append(row)
    return rows


def _passes(row: dict[str, Any], f: Filters) -> bool:
    """The reference: one image, one condition at a time, in plain Python."""
    if f.bbox is not None:
        if "lon_min" not in row:
            return False
        x0, y0, x1, y1 = f.bbox
        if row["lon_max"] < x0 or row["lon_min"] > x1 or row["lat_max"] < y0 or row["lat_min"] > y1:
            return False
    if f.time_from is not None or f.time_to is not None:
        if "time" not in row:
            return False
        if f.time_from is not None and row["time"] < f.time_from:
            return False
        if f.time_to is not None and row["time"] > f.time_to:
            return False
    if f.sensors is not None and row.get("sensor") not in f.sensors:
        return False
    return f.tags is None or all(t in row["tags"] for t in f.tags)


def _random_filters(rng: np.random.Generator) -> Filters:
    kwargs: dict[str, Any] = {}
    if rng.random() < 0.5:
        lon, lat = (float(v) for v in rng.integers(-10, 10, 2))
        kwargs["bbox"] = (lon, lat, lon + float(rng.integers(0, 5)), lat + float(rng.integers(0, 5)))
    if rng.random() < 0.5:
        lo = int(rng.integers(0, 20)) * 100
        kwargs["time_from"] = lo if rng.random() < 0.7 else None
        kwargs["time_to"] = lo + int(rng.integers(0, 5)) * 100 if rng.random() < 0.7 else None
    if rng.random() < 0.5:
        kwargs["sensors"] = tuple(rng.choice(SENSORS, int(rng.integers(1, 3)), replace=False).tolist())
    if rng.random() < 0.5:
        kwargs["tags"] = tuple(rng.choice(TAGS, int(rng.integers(1, 3)), replace=False).tolist())
    return Filters(**kwargs)


def test_mask_equals_the_per_row_reference_on_random_metadata_and_filters() -> None:
    rows = _random_rows(400, seed=0)
    columns = _columns(rows)
    rng = np.random.default_rng(1)
    for _ in range(300):
        f = _random_filters(rng)
        expected = [_passes(r, f) for r in rows]
        assert filter_mask(columns, f).tolist() == expected, f


def test_bbox_touching_edges_and_corners_intersect_and_unknown_boxes_do_not() -> None:
    cols = _columns(
        [
            {"lon_min": 0.0, "lat_min": 0.0, "lon_max": 1.0, "lat_max": 1.0},  # query's left edge
            {"lon_min": 2.0, "lat_min": 2.0, "lon_max": 3.0, "lat_max": 3.0},  # shares a corner
            {"lon_min": 3.0, "lat_min": 0.0, "lon_max": 4.0, "lat_max": 1.0},  # one degree to the right
            {"lon_min": 1.5, "lat_min": 1.5, "lon_max": 1.6, "lat_max": 1.6},  # inside
            {"lon_min": -5.0, "lat_min": -5.0, "lon_max": 5.0, "lat_max": 5.0},  # contains the query
            {},  # unknown footprint
        ]
    )
    mask = filter_mask(cols, Filters(bbox=(1.0, 1.0, 2.0, 2.0)))
    assert mask.tolist() == [True, True, False, True, True, False]


def test_time_bounds_are_inclusive_and_unknown_time_fails_any_time_filter() -> None:
    cols = _columns([{"time": 100}, {"time": 200}, {"time": 300}, {}])
    assert filter_mask(cols, Filters(time_from=100, time_to=200)).tolist() == [True, True, False, False]
    assert filter_mask(cols, Filters(time_from=200)).tolist() == [False, True, True, False]
    assert filter_mask(cols, Filters(time_to=200)).tolist() == [True, True, False, False]
    # The sentinel is the smallest int64, yet "before 200" must not match an image of unknown date.
    assert filter_mask(cols, Filters(time_to=TIME_UNKNOWN + 1)).tolist() == [False] * 4


def test_tags_are_all_of_and_sensors_any_of() -> None:
    cols = _columns(
        [
            {"sensor": "s2", "tags": {"port", "ship"}},
            {"sensor": "wv3", "tags": {"port"}},
            {"tags": {"port", "ship", "road"}},  # unknown sensor
        ]
    )
    assert filter_mask(cols, Filters(tags=("port", "ship"))).tolist() == [True, False, True]
    assert filter_mask(cols, Filters(sensors=("s2", "wv3"))).tolist() == [True, True, False]
    both = Filters(sensors=("s2", "wv3"), tags=("port", "ship"))
    assert filter_mask(cols, both).tolist() == [True, False, False]


def test_empty_filters_pass_everything_even_unknown_metadata() -> None:
    f = Filters()
    assert f.is_empty and not Filters(tags=("x",)).is_empty
    assert filter_mask(MetadataColumns.empty(3), f).tolist() == [True] * 3
    assert filter_mask(MetadataColumns.empty(3), Filters(sensors=("s2",))).tolist() == [False] * 3
    assert filter_mask(MetadataColumns.empty(0), Filters(tags=("x",))).shape == (0,)


def test_row_is_json_ready_and_reports_unknowns_as_none() -> None:
    t = int(dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.UTC).timestamp())
    base = _columns(
        [
            {"lon_min": 1.0, "lat_min": 2.0, "lon_max": 3.0, "lat_max": 4.0, "time": t, "sensor": "s2"}
            | {"tags": {"ship", "port"}},
            {"lon_min": 1.0},  # a half-known footprint is no footprint
        ]
    )
    cols = MetadataColumns(**{**base.__dict__, "extra": {"place": np.array(["Brest", None], dtype=object)}})
    assert cols.row(0) == {
        "bbox": [1.0, 2.0, 3.0, 4.0],
        "time": "2021-03-04T05:06:07Z",
        "sensor": "s2",
        "tags": ["port", "ship"],
        "place": "Brest",
    }
    assert cols.row(1) == {"bbox": None, "time": None, "sensor": None, "tags": []}
    assert MetadataColumns.empty(2).row(1) == {"bbox": None, "time": None, "sensor": None, "tags": []}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bbox": (0.0, 2.0, 1.0, 1.0)}, "south <= north"),
        ({"bbox": (-181.0, 0.0, 1.0, 1.0)}, "longitudes"),
        ({"bbox": (0.0, 0.0, 1.0, 90.5)}, "latitudes"),
        ({"bbox": (0.0, 0.0, math.nan, 1.0)}, "finite"),
        ({"time_from": 10, "time_to": 9}, "after time_to"),
        ({"sensors": ()}, "empty list"),
        ({"sensors": ("s2", "")}, "non-empty strings"),
        ({"tags": (" ",)}, "non-empty strings"),
    ],
)
def test_invalid_filters_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Filters(**kwargs)


def test_columns_of_different_lengths_are_refused() -> None:
    cols = MetadataColumns.empty(3)
    with pytest.raises(InvalidInputError, match="lon_min"):
        MetadataColumns(**{**cols.__dict__, "lon_min": np.zeros(2)})
