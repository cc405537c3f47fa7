"""The geo parts of the HTTP API on a real server over an index of scene chips (tests/service/geo_index):
GeoJSON by ``Accept``, a chip's pixels read from its scene, and the scene overview with chips outlined.
Expected pixels come from the arrays the fixture wrote (numpy), not from the reader under test."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from PIL import Image
from shapely.geometry import box, shape

from rsir.model.encoders import ClipEncoder
from rsir.service.geojson import MEDIA_TYPE
from tests.conftest import REPO
from tests.service.conftest import LiveServer, assert_error, make_settings
from tests.service.geo_index import NODATA_COLS, GeoIndex, build_geo_index, stretched

SCHEMA = json.loads((REPO / "tests/fixtures/geojson/FeatureCollection.json").read_text())


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: ClipEncoder) -> GeoIndex:
    return build_geo_index(tmp_path_factory.mktemp("geo"), tiny_encoder)


@pytest.fixture(scope="module")
def geo_client(geo: GeoIndex, tiny_encoder: ClipEncoder) -> Iterator[httpx.Client]:
    live = LiveServer(make_settings(geo.root), tiny_encoder).start()
    with live.client() as client:
        yield client
    live.stop()


def png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def search(client: httpx.Client, accept: str | None, **body: Any) -> httpx.Response:
    headers = {"Accept": accept} if accept is not None else {}
    return client.post("/search/text", json={"query": "boats in a harbour", "k": 22, **body}, headers=headers)


# -- pixels from the source ------------------------------------------------------------------------
def test_a_chip_is_its_window_of_the_scene_nodata_black(geo: GeoIndex, geo_client: httpx.Client):
    expected = stretched(geo.scenes["harbour"])
    for ident in ("harbour/0_0.png", "harbour/1_2.png"):
        col, row, width, height = geo.windows[ident]
        got = png(geo_client.get(f"/images/{ident}"))
        assert np.array_equal(got, expected[row : row + height, col : col + width])
    left = png(geo_client.get("/images/harbour/0_0.png"))
    assert not left[:, :NODATA_COLS].any()  # the nodata border, black


def test_a_16_bit_chip_is_stretched_by_the_scene_percentiles(geo: GeoIndex, geo_client: httpx.Client):
    expected = stretched(geo.scenes["s2"])
    col, row, width, height = geo.windows["s2/1_1.png"]
    got = png(geo_client.get("/images/s2/1_1.png")).astype(int)
    assert np.abs(got - expected[row : row + height, col : col + width]).max() <= 1  # rounding of the bounds


def test_a_chip_thumbnail_and_overlay_are_drawn_from_the_window(geo: GeoIndex, geo_client: httpx.Client):
    thumb = geo_client.get("/images/harbour/2_3.png/thumbnail", params={"size": 56})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.size == (56, 56)
    col, row, width, height = geo.windows["harbour/2_3.png"]
    window = stretched(geo.scenes["harbour"])[row : row + height, col : col + width]
    halved = np.asarray(Image.fromarray(window).resize((56, 56), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(np.asarray(image.convert("RGB"), dtype=float) - halved).mean() < 12  # JPEG, resampling
    overlay = geo_client.get("/images/harbour/2_3.png/explain.png", params={"query": "boats", "size": 64})
    assert png(overlay).shape == (64, 64, 3)


def test_a_changed_or_missing_scene_is_the_servers_500_naming_no_path(
    geo: GeoIndex, tiny_encoder: ClipEncoder, tmp_path: Path
):
    archive = Path(shutil.copytree(geo.archive, tmp_path / "scenes"))
    live = LiveServer(make_settings(geo.root, archive_root=archive), tiny_encoder).start()
    try:
        with live.client() as client:
            assert client.get("/images/s2/0_0.png").status_code == 200  # served from the moved archive
            with (archive / "s2.tif").open("ab") as fh:
                fh.write(b"\0")
            error = assert_error(client.get("/images/s2/0_1.png"), 500, "original_changed")
            (archive / "fiji.tif").unlink()
            error = assert_error(client.get("/images/fiji/0_0.png"), 500, "original_unavailable")
            assert str(tmp_path) not in error["message"]
    finally:
        live.stop()


def test_a_chip_whose_scene_reading_is_not_recorded_is_a_404_naming_it(
    geo: GeoIndex, tiny_encoder: ClipEncoder, tmp_path: Path
):
    # A version of chips without scenes.json (written before it existed): its chips are not served as
    # their scene file's bytes (sources.json names the file), and the answer says what is missing.
    root = Path(shutil.copytree(geo.root, tmp_path / "index"))
    for recorded in root.glob("v*/scenes.json"):
        recorded.unlink()
    live = LiveServer(make_settings(root, archive_root=geo.archive), tiny_encoder).start()
    try:
        with live.client() as client:
            error = assert_error(client.get("/images/harbour/0_0.png"), 404, "not_found")
            assert "scenes.json" in error["message"] and "'harbour/0_0.png'" in error["message"]
            assert_error(client.get("/images/harbour/0_0.png/thumbnail"), 404, "not_found")
    finally:
        live.stop()


# -- GeoJSON ---------------------------------------------------------------------------------------
def test_accept_geojson_gives_the_same_hits_as_a_feature_collection(geo: GeoIndex, geo_client: httpx.Client):
    plain = search(geo_client, None)
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    hits = plain.json()["results"]
    answer = search(geo_client, MEDIA_TYPE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == MEDIA_TYPE
    collection = answer.json()
    jsonschema.validate(collection, SCHEMA)
    assert collection["index_version"] == plain.json()["index_version"]
    features = collection["features"]
    # every hit once: kept, or listed under the kept hit of its scene it overlaps
    listed = [f["id"] for f in features] + [m["id"] for f in features for m in f["properties"]["merged"]]
    assert sorted(listed) == sorted(h["id"] for h in hits)
    ranks = [f["properties"]["rank"] for f in features]
    assert ranks == sorted(ranks) and ranks[0] == 1
    by_id = {h["id"]: h for h in hits}
    for feature in features:
        props, ident = feature["properties"], feature["id"]
        assert props["scene"] == geo.scene_of[ident]
        assert props["score"] == by_id[ident]["score"]
        assert props["image_url"] == f"/images/{ident}"
        for merged in props["merged"]:
            assert geo.scene_of[merged["id"]] == props["scene"]
            assert merged["rank"] > props["rank"]
            assert _windows_overlap(geo.windows[merged["id"]], geo.windows[ident])
        west, south, east, north = geo.bboxes[ident]
        footprint = shape(feature["geometry"])
        if west < 180 < east:  # crosses the antimeridian: two parts, west > east in the bbox
            assert feature["geometry"]["type"] == "MultiPolygon"
            assert feature["bbox"] == pytest.approx([west, south, east - 360, north])
            assert footprint.area == pytest.approx(box(west, south, east, north).area)
        else:
            shift = -360 if west >= 180 else 0  # wholly past 180: written back in [-180, 180]
            assert footprint.equals_exact(box(west + shift, south, east + shift, north), 1e-6)
    # kept features of one scene never overlap (else one would have been merged into the other)
    kept = [(f["properties"]["scene"], geo.windows[f["id"]]) for f in features]
    for i, (scene, window) in enumerate(kept):
        assert not any(s == scene and _windows_overlap(window, w) for s, w in kept[:i])


def test_a_cached_answer_is_converted_too(geo_client: httpx.Client):
    first = search(geo_client, MEDIA_TYPE, query="a cached query about roofs")
    again = search(geo_client, MEDIA_TYPE, query="a cached query about roofs")
    assert again.headers["content-type"] == MEDIA_TYPE
    assert again.json()["cache"] == "hit" and again.json()["features"] == first.json()["features"]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("application/geo+json;q=0.9, application/json", "application/json"),
        ("application/json;q=0.5, application/geo+json", MEDIA_TYPE),
        ("text/html, application/geo+json;q=0.1", MEDIA_TYPE),
        ("application/json;q=0, */*", MEDIA_TYPE),
    ],
)
def test_accept_is_negotiated_with_quality_values(geo_client: httpx.Client, accept: str, media: str):
    answer = search(geo_client, accept, k=2)
    assert answer.status_code == 200 and answer.headers["content-type"] == media


@pytest.mark.parametrize(
    "accept", ["text/html", "image/png", "application/xml, text/*", "application/geo+json;q=0"]
)
def test_an_unsupported_accept_is_406_naming_both_types(geo_client: httpx.Client, accept: str):
    error = assert_error(search(geo_client, accept, k=2), 406, "not_acceptable")
    assert "application/json" in error["message"] and MEDIA_TYPE in error["message"]
    upload = geo_client.post("/search/image", files={"file": b"x"}, headers={"Accept": accept})
    assert_error(upload, 406, "not_acceptable")  # refused before the upload is looked at


def test_image_search_answers_geojson(geo_client: httpx.Client):
    chip = geo_client.get("/images/harbour/1_1.png").content
    files = {"file": ("chip.png", chip, "image/png")}
    answer = geo_client.post("/search/image", files=files, data={"k": "4"}, headers={"Accept": MEDIA_TYPE})
    assert answer.status_code == 200, answer.text
    jsonschema.validate(answer.json(), SCHEMA)
    assert answer.json()["features"][0]["id"] == "harbour/1_1.png"  # finds itself first


def test_openapi_declares_the_geojson_answer_and_the_406(geo_client: httpx.Client):
    paths = geo_client.get("/openapi.json").json()["paths"]
    for route in ("/search/text", "/search/image"):
        responses = paths[route]["post"]["responses"]
        assert set(responses["200"]["content"]) == {"application/json", MEDIA_TYPE}
        assert "406" in responses
    assert "/scenes/{scene_id}/overview.png" in paths


# -- scene overview --------------------------------------------------------------------------------
def test_the_overview_outlines_the_chips_asked_for(geo: GeoIndex, geo_client: httpx.Client):
    ids = ["harbour/0_1.png", "harbour/2_3.png"]
    got = png(geo_client.get("/scenes/harbour/overview.png", params={"ids": ",".join(ids), "size": 168}))
    assert got.shape == (140, 168, 3)  # 336 x 280 scaled to fit 168
    cyan, yellow = (0, 229, 255), (255, 221, 0)
    # halved windows: harbour/0_1 is cols 84..196, rows 0..112 -> 42..97, 0..55 (first id: cyan)
    assert tuple(got[20, 42]) == cyan and tuple(got[0, 60]) == cyan
    col, row, _, _ = geo.windows["harbour/2_3.png"]  # (224, 168): its top-left corner at (112, 84)
    assert tuple(got[row // 2 + 20, col // 2]) == yellow
    inside = got[10:40, 60:80].reshape(-1, 3)
    assert not any(tuple(p) in (cyan, yellow) for p in inside)
    plain = png(geo_client.get("/scenes/harbour/overview.png", params={"size": 168}))
    scene = Image.fromarray(stretched(geo.scenes["harbour"]))
    expected = np.asarray(scene.resize((168, 140), Image.Resampling.BOX))
    assert np.abs(plain.astype(int) - expected).mean() < 4  # the overview level, not the full scene


def test_overview_refusals(geo_client: httpx.Client):
    assert_error(geo_client.get("/scenes/nowhere/overview.png"), 404, "not_found")
    error = assert_error(
        geo_client.get("/scenes/harbour/overview.png", params={"ids": "s2/0_0.png,harbour/0_0.png"}), 422
    )
    assert "s2/0_0.png" in error["message"]
    assert_error(geo_client.get("/scenes/harbour/overview.png", params={"size": 100_000}), 422)
    many = ",".join(["harbour/0_0.png"] * 201)
    assert_error(geo_client.get("/scenes/harbour/overview.png", params={"ids": many}), 422)


def _windows_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_with_keys_the_geojson_urls_are_signed_and_the_overview_needs_a_key(
    geo: GeoIndex, tiny_encoder: ClipEncoder
):
    live = LiveServer(make_settings(geo.root, api_keys={"alice": 0}), tiny_encoder).start()
    try:
        with live.client() as client:
            key = {"X-API-Key": "alice"}
            answer = client.post(
                "/search/text", json={"query": "harbour", "k": 3}, headers={**key, "Accept": MEDIA_TYPE}
            )
            assert answer.status_code == 200, answer.text
            props = answer.json()["features"][0]["properties"]
            assert "?t=" in props["thumbnail_url"] and "?t=" in props["image_url"]
            assert client.get(props["thumbnail_url"]).status_code == 200  # the token alone opens it
            assert_error(client.get("/scenes/harbour/overview.png"), 401)
            overview = client.get("/scenes/harbour/overview.png", headers=key)
            assert png(overview).shape == (280, 336, 3)  # the default 1024 px: never enlarged
    finally:
        live.stop()
