"""The GeoJSON writer against hand-written expected GeoJSON, the official GeoJSON JSON Schema
(tests/fixtures/geojson), a shapely round trip, and RFC 7946's ring, antimeridian and bbox rules."""

from __future__ import annotations

import itertools
import json
from typing import Any

import jsonschema
import pytest
from shapely.geometry import Polygon, box, shape
from shapely.validation import explain_validity

from rsir.service.antimeridian import union_bbox
from rsir.service.chip_merge import Place, merge_overlapping, overlap
from rsir.service.geojson import feature_collection, geometry_and_bbox
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "tests/fixtures/geojson/FeatureCollection.json").read_text())


def hit(ident: str, rank: int, score: float, **metadata: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "id": ident,
        "score": score,
        "coarse_score": score,
        "fine_score": None,
        "metadata": {"bbox": [0, 0, 1, 1], "time": None, "sensor": None, "tags": [], **metadata},
        "image_url": f"/images/{ident}",
        "thumbnail_url": f"/images/{ident}/thumbnail",
        "explain": None,
    }


def valid(collection: dict[str, Any]) -> dict[str, Any]:
    """Schema-valid, JSON-serialisable, and every geometry reads back in shapely as valid."""
    jsonschema.validate(collection, SCHEMA)
    json.dumps(collection, allow_nan=False)
    for feature in collection["features"]:
        if feature["geometry"] is not None:
            geom = shape(feature["geometry"])
            assert geom.is_valid, explain_validity(geom)
    return collection


def signed_area(ring: list[list[float]]) -> float:
    """Shoelace: positive for a counter-clockwise ring (computed here, not by shapely)."""
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring)) / 2


def test_a_plain_footprint_is_a_ccw_closed_polygon_with_its_bbox_and_properties():
    # Clockwise in, as a UTM corner transform often gives: (w,n) (e,n) (e,s) (w,s)
    footprint = Polygon([(10.0, 46.0), (10.5, 46.0), (10.5, 45.5), (10.0, 45.5)])
    out = valid(
        feature_collection(
            [hit("s1/0_0", 1, 0.9, time="2024-05-01T10:00:00Z", sensor="S2A")],
            [Place(footprint, "s1", (0, 0, 224, 224))],
            members={"index_version": "v1"},
        )
    )
    assert out == {
        "type": "FeatureCollection",
        "index_version": "v1",
        "bbox": [10.0, 45.5, 10.5, 46.0],
        "features": [
            {
                "type": "Feature",
                "id": "s1/0_0",
                "geometry": {
                    "type": "Polygon",
                    # counter-clockwise: down the west edge, east along the south, up the east edge
                    "coordinates": [[[10.0, 46.0], [10.0, 45.5], [10.5, 45.5], [10.5, 46.0], [10.0, 46.0]]],
                },
                "bbox": [10.0, 45.5, 10.5, 46.0],
                "properties": {
                    "id": "s1/0_0",
                    "rank": 1,
                    "score": 0.9,
                    "coarse_score": 0.9,
                    "fine_score": None,
                    "image_url": "/images/s1/0_0",
                    "thumbnail_url": "/images/s1/0_0/thumbnail",
                    "scene": "s1",
                    "datetime": "2024-05-01T10:00:00Z",
                    "time": "2024-05-01T10:00:00Z",
                    "sensor": "S2A",
                    "tags": [],
                    "merged": [],
                },
            }
        ],
    }
    ring = out["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and signed_area(ring) > 0


def test_holes_are_clockwise_and_a_geojson_dict_is_accepted():
    outer = [(0, 0), (0, 4), (4, 4), (4, 0), (0, 0)]  # clockwise
    hole = [(1, 1), (2, 1), (2, 2), (1, 2), (1, 1)]  # counter-clockwise
    geometry, bbox = geometry_and_bbox({"type": "Polygon", "coordinates": [outer, hole]})
    assert geometry is not None
    exterior, interior = geometry["coordinates"]
    assert signed_area(exterior) > 0 and signed_area(interior) < 0
    assert bbox == [0, 0, 4, 4]


@pytest.mark.parametrize(
    "ring",
    [
        [(179.5, -17.0), (-179.5, -17.0), (-179.5, -16.0), (179.5, -16.0)],  # wrapped
        [(179.5, -17.0), (180.5, -17.0), (180.5, -16.0), (179.5, -16.0)],  # past 180
        [(-180.5, -17.0), (-179.5, -17.0), (-179.5, -16.0), (-180.5, -16.0)],  # below -180
    ],
    ids=["wrapped", "past-180", "below-minus-180"],
)
def test_a_footprint_crossing_the_antimeridian_is_split_and_its_bbox_has_west_above_east(ring):
    out = valid(feature_collection([hit("fiji/0_0", 1, 0.5)], [Place(Polygon(ring), "fiji", None)]))
    feature = out["features"][0]
    assert feature["geometry"] == {
        "type": "MultiPolygon",
        "coordinates": [
            [[[179.5, -17.0], [180.0, -17.0], [180.0, -16.0], [179.5, -16.0], [179.5, -17.0]]],
            [[[-179.5, -16.0], [-180.0, -16.0], [-180.0, -17.0], [-179.5, -17.0], [-179.5, -16.0]]],
        ],
    }
    assert feature["bbox"] == [179.5, -17.0, -179.5, -16.0]
    assert out["bbox"] == [179.5, -17.0, -179.5, -16.0]
    for part in feature["geometry"]["coordinates"]:
        assert signed_area(part[0]) > 0
    assert shape(feature["geometry"]).area == pytest.approx(1.0)  # nothing lost in the cut


def test_a_hit_without_footprint_has_null_geometry_and_no_bbox():
    out = valid(feature_collection([hit("tile.png", 1, 0.3)], [Place(None)]))
    (feature,) = out["features"]
    assert feature["geometry"] is None and "bbox" not in feature and "bbox" not in out
    assert feature["properties"]["scene"] is None


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        ([[10, 0, 11, 1], [20, -5, 21, 2]], [10, -5, 21, 2]),
        ([[170, 0, 175, 1], [-175, 0, -170, 1]], [170, 0, -170, 1]),  # shortest way is across 180
        ([[179, 0, -179, 1], [10, 0, 11, 1]], [10, 0, -179, 1]),  # widest gap: -179 .. 10
        ([[179, 0, -179, 1], [-170, 0, -160, 1]], [179, 0, -160, 1]),
        ([[-180, 0, 0, 1], [0, 0, 180, 1]], [-180, 0, 180, 1]),  # the whole circle
    ],
)
def test_union_bbox_takes_the_shorter_way_round(boxes, expected):
    assert union_bbox(boxes) == expected


def test_overlapping_chips_of_one_scene_merge_into_the_best_ranked():
    # A 224 px grid with overlap 0.25 (stride 168): (0,0) and (168,0) share 56 columns, (336,0) shares
    # 56 with (168,0) but none with (0,0); a chip of another scene at the same place never merges.
    chips = [
        ("a/0_0", Place(box(0, 0, 1, 1), "a", (0, 0, 224, 224))),
        ("b/0_0", Place(box(0, 0, 1, 1), "b", (0, 0, 224, 224))),
        ("a/0_1", Place(box(0.75, 0, 1.75, 1), "a", (168, 0, 224, 224))),
        ("a/0_2", Place(box(1.5, 0, 2.5, 1), "a", (336, 0, 224, 224))),
        ("a/1_0", Place(box(0, -0.75, 1, 0.25), "a", (0, 168, 224, 224))),
        ("tile", Place(box(0, 0, 1, 1))),
    ]
    hits = [hit(ident, rank, 1 - rank / 10) for rank, (ident, _) in enumerate(chips, 1)]
    out = valid(feature_collection(hits, [p for _, p in chips]))
    kept = {f["id"]: f["properties"]["merged"] for f in out["features"]}
    assert kept == {
        "a/0_0": [{"id": "a/0_1", "rank": 3, "score": 0.7}, {"id": "a/1_0", "rank": 5, "score": 0.5}],
        "b/0_0": [],
        "a/0_2": [],  # overlaps a/0_1 only, which was merged away: no chains
        "tile": [],
    }
    assert [f["id"] for f in out["features"]] == ["a/0_0", "b/0_0", "a/0_2", "tile"]  # rank order kept
    assert len(valid(feature_collection(hits, [p for _, p in chips], merge_iou=-1))["features"]) == 6


def test_touching_windows_do_not_merge_and_footprints_merge_above_the_iou_threshold():
    touching = (Place(None, "s", (0, 0, 224, 224)), Place(None, "s", (224, 0, 224, 224)))
    assert not overlap(*touching)
    # no windows: footprint IoU decides. Unit squares shifted by 0.5: IoU = 0.5 / 1.5 = 1/3
    a, b = Place(box(0, 0, 1, 1), "s"), Place(box(0.5, 0, 1.5, 1), "s")
    assert overlap(a, b, iou=0.3) and not overlap(a, b, iou=0.34)
    # the same across the antimeridian, one footprint wrapped and one unwrapped
    c = Place(Polygon([(179.5, 0), (-179.5, 0), (-179.5, 1), (179.5, 1)]), "s")
    d = Place(box(180.0, 0, 181.0, 1), "s")
    assert overlap(c, d, iou=0.3) and not overlap(c, d, iou=0.34)
    assert merge_overlapping([a, b, c], 0.3) == [(0, [1]), (2, [])]


def test_a_caption_hit_is_a_feature_of_its_image():
    caption = {
        "rank": 1,
        "caption": "a ship",
        "image_id": "s/0_0",
        "score": 0.4,
        "coarse_score": 0.4,
        "fine_score": 0.1,
        "thumbnail_url": "/images/s/0_0/thumbnail",
    }
    out = valid(feature_collection([caption], [Place(box(1, 1, 2, 2), "s", (0, 0, 10, 10))]))
    props = out["features"][0]["properties"]
    assert out["features"][0]["id"] == "s/0_0" and props["caption"] == "a ship" and props["id"] == "s/0_0"


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="2 hits but 1 places"):
        feature_collection([hit("a", 1, 1.0), hit("b", 2, 0.5)], [Place()])
