"""The search page's map in Chromium against a real server over an index of scene chips
(tests/service/geo_index): the footprints of a search drawn from the GeoJSON answer over a local world
outline, a click showing the chip and its scene, "search inside this scene", and a drawn rectangle or
polygon sent as the intersects filter. Nothing is fetched from outside the server (no tile server)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from rsir.index_builder.demo import DemoIndex
from rsir.model.encoders import ClipEncoder
from tests.e2e.conftest import LiveServer, _serve, screenshot
from tests.e2e.test_page import expect, rendered, sent_json
from tests.service.geo_index import GeoIndex, build_geo_index
from tests.service.test_geojson import signed_area

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

QUERY = "boats moored in a harbour"


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory, demo_encoder: ClipEncoder) -> GeoIndex:
    return build_geo_index(tmp_path_factory.mktemp("e2e-geo"), demo_encoder)


@pytest.fixture(scope="module")
def geo_server(geo: GeoIndex, demo_encoder: ClipEncoder) -> Iterator[LiveServer]:
    yield from _serve(DemoIndex(archive=geo.archive, root=geo.root), demo_encoder)


@pytest.fixture
def map_page(browser: Browser, geo_server: LiveServer) -> Iterator[tuple[Page, list[str]]]:
    """The page on the geo server; the second item lists every URL the page asked for."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    asked: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(geo_server.url + "/")
    expect(page.locator("#map")).to_have_attribute("data-outline", "ready")
    yield page, asked
    context.close()
    assert not errors, f"script errors on the page: {errors}"
    outside = [u for u in asked if not u.startswith(geo_server.url) and not u.startswith(("blob:", "data:"))]
    assert not outside, f"the page reached outside its server: {outside}"


def _geo(request: Request) -> bool:
    return "geo+json" in (request.headers.get("accept") or "")


def search(page: Page, k: int = 22) -> dict[str, Any]:
    """A text search; returns the GeoJSON answer the map drew."""
    page.fill("#k", str(k))
    page.fill("#query", QUERY)
    with page.expect_response(lambda r: "search/text" in r.url and _geo(r.request)) as got:
        page.press("#query", "Enter")
    collection: dict[str, Any] = got.value.json()
    rendered(page)
    located = [f for f in collection["features"] if f["geometry"]]
    expect(page.locator("#map")).to_have_attribute("data-features", str(len(located)))
    return collection


def test_the_map_draws_the_searchs_footprints_over_the_world_outline(map_page: tuple[Page, list[str]]):
    page, asked = map_page
    collection = search(page)
    drawn = page.eval_on_selector_all("#map path.footprint", "els => els.map(e => e.dataset.id)")
    # one path per located feature (a MultiPolygon across the antimeridian is one path of two rings)
    assert sorted(drawn) == sorted(f["id"] for f in collection["features"] if f["geometry"])
    merged = sum(len(f["properties"]["merged"]) for f in collection["features"])
    assert len(collection["features"]) + merged == 22  # every hit is drawn or listed under one drawn
    assert any("vendor/world-atlas/land-110m.json" in u for u in asked)
    expect(page.locator("#map-count")).to_contain_text(f"{len(drawn)} of {len(collection['features'])}")
    screenshot(page, "map-01-footprints")


def test_clicking_a_footprint_shows_the_chip_and_its_scene(map_page: tuple[Page, list[str]], geo: GeoIndex):
    page, _ = map_page
    collection = search(page)
    first = next(f for f in collection["features"] if f["properties"]["scene"] == "harbour")
    # a chip is a pixel at the zoom that shows Europe and Fiji: the click is dispatched on its path
    page.locator(f'#map path.footprint[data-id="{first["id"]}"]').dispatch_event("click")
    panel = page.locator("#map-chip")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-id", first["id"])
    thumb = panel.locator("img.map-thumb")
    expect(thumb).to_have_attribute("src", first["properties"]["thumbnail_url"])
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=thumb.element_handle())
    overview = panel.locator("img.map-overview")
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=overview.element_handle())
    screenshot(page, "map-02-chip")

    with page.expect_request(lambda r: "search/text" in r.url) as sent:
        panel.locator("#search-scene").click()
    assert sent_json(sent.value)["filters"] == {"scene": ["harbour"]}
    expect(page.locator("#map-clear-scene")).to_be_visible()


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    box = page.locator("#map").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + start[0], box["y"] + start[1])
    page.mouse.down()
    page.mouse.move(box["x"] + (start[0] + end[0]) / 2, box["y"] + (start[1] + end[1]) / 2, steps=4)
    page.mouse.move(box["x"] + end[0], box["y"] + end[1], steps=4)
    page.mouse.up()


def ring_checks(geometry: dict[str, Any]) -> list[list[float]]:
    assert geometry["type"] == "Polygon"
    ring: list[list[float]] = geometry["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) >= 4
    assert signed_area(ring) > 0, "counter-clockwise"
    return ring


def test_a_drawn_rectangle_or_polygon_is_sent_as_the_intersects_filter(map_page: tuple[Page, list[str]]):
    page, _ = map_page
    page.fill("#query", QUERY)
    page.click("#draw-rectangle")
    expect(page.locator("#map")).to_have_attribute("data-drawing", "rectangle")
    with page.expect_request(lambda r: "search/text" in r.url) as sent:
        drag(page, (200, 120), (420, 260))
    filters = sent_json(sent.value)["filters"]
    ring = ring_checks(filters["intersects"])
    assert len(ring) == 5  # a rectangle: four corners, closed
    lons, lats = {p[0] for p in ring}, {p[1] for p in ring}
    assert len(lons) == 2 and len(lats) == 2
    expect(page.locator("#map-clear-area")).to_be_visible()
    screenshot(page, "map-03-rectangle")

    page.click("#draw-polygon")
    box = page.locator("#map").bounding_box()
    assert box is not None
    with page.expect_request(lambda r: "search/text" in r.url) as sent:
        for x, y in ((300, 100), (500, 150), (450, 300)):
            page.mouse.click(box["x"] + x, box["y"] + y)
        page.mouse.dblclick(box["x"] + 320, box["y"] + 260)
    ring = ring_checks(sent_json(sent.value)["filters"]["intersects"])
    assert len(ring) == 5  # four clicked corners, closed

    with page.expect_request(lambda r: "search/text" in r.url) as sent:
        page.click("#map-clear-area")
    assert "intersects" not in (sent_json(sent.value).get("filters") or {})


def test_the_map_files_are_served_locally_with_their_licences(geo_server: LiveServer):
    page = httpx.get(geo_server.url + "/", timeout=10).text
    assets = re.findall(r'(?:src|href)="([^"#]+\.(?:js|css))"', page)
    vendored = {"vendor/leaflet/leaflet.js", "vendor/topojson-client/topojson-client.min.js"}
    assert vendored | {"map.js", "vendor/leaflet/leaflet.css"} <= set(assets)
    for path in [*assets, "vendor/world-atlas/land-110m.json", "vendor/leaflet/LICENSE"]:
        assert httpx.get(f"{geo_server.url}/{path}", timeout=10).status_code == 200, path
    own = httpx.get(geo_server.url + "/map.js", timeout=10).text
    assert len(own) < 32_000 and not re.search(r"https?://", own)
