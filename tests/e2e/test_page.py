"""The search page in a real headless Chromium against a real server: text query, explain overlays,
rerank on/off, query by example, image to captions, filters, errors, the full-image viewer, phone width.

Each state is saved as a screenshot under logs/e2e-screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.conftest import PHONE, LiveServer, PageFactory, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import FilePayload, Locator, Page, Request

QUERY = "three white planes parked near the terminal"
RESULTS = "#results > li"


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported late: this module loads without Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


# -- helpers ---------------------------------------------------------------------------------------
def rendered(page: Page) -> None:
    """Wait until the page has drawn the answer of the search it started."""
    expect(page.locator("#results")).not_to_have_attribute("aria-busy", "true")


def text_search(page: Page, query: str = QUERY, k: int = 6) -> dict[str, Any]:
    """Type the query and press Enter; returns the JSON the page received."""
    page.fill("#k", str(k))
    page.fill("#query", query)
    with page.expect_response("**/search/text") as info:
        page.press("#query", "Enter")
    body: dict[str, Any] = info.value.json()
    rendered(page)
    return body


def images_loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        """s => { const all = [...document.querySelectorAll(s)];
                  return all.length > 0 && all.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=selector,
    )


def loaded(page: Page, image: Locator) -> None:
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=image.element_handle())


def sent_json(request: Request) -> dict[str, Any]:
    body = request.post_data_json
    assert isinstance(body, dict), request.post_data
    return body


def shown_ids(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(RESULTS, "els => els.map(e => e.dataset.id)")
    return ids


def no_horizontal_scroll(page: Page, width: int) -> None:
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, f"page is {scroll_width} px wide in a {width} px viewport"


# -- tests -----------------------------------------------------------------------------------------
def test_typing_a_query_and_enter_shows_ranked_tiles(open_page: PageFactory):
    page = open_page()
    body = text_search(page, k=6)

    assert body["target"] == "images" and len(body["results"]) == 6
    expect(page.locator(RESULTS)).to_have_count(6)
    assert shown_ids(page) == [hit["id"] for hit in body["results"]]  # the server's order, unchanged
    for card, hit in zip(page.locator(RESULTS).all(), body["results"], strict=True):
        expect(card.locator(".file")).to_have_text(PurePosixPath(hit["id"]).name)
        expect(card.locator(".score")).to_contain_text(f"score {hit['score']:.3f}")
        expect(card.locator(".score")).to_contain_text(f"fine {hit['fine_score']:.3f}")
        expect(card.locator(".meta")).to_contain_text(hit["metadata"]["sensor"])
        expect(card.locator("a.tile")).to_have_attribute("href", hit["image_url"])
    images_loaded(page, ".thumb")
    expect(page.locator("#status")).to_contain_text(f"6 images for “{QUERY}”")
    stats = page.locator("#stats")
    expect(stats).to_contain_text(f"cache {body['cache']}")
    expect(stats).to_contain_text(f"index {body['index_version']}")
    expect(stats).to_contain_text(re.compile(r"\d+\.\d ms \(.*rerank \d"))
    assert "q=three+white+planes" in page.url  # the search is a link
    expect(page.get_by_role("alert")).to_be_hidden()
    screenshot(page, "01-text-results")


def test_explain_overlays_the_chosen_words_heatmap(open_page: PageFactory):
    page = open_page()
    text_search(page, k=4)
    expect(page.locator(".overlay")).to_have_count(0)

    with page.expect_request("**/search/text") as sent, page.expect_response("**/search/text") as got:
        page.check("#explain")  # re-runs the shown search with explanations
    assert sent_json(sent.value)["explain"] is True
    body = got.value.json()
    rendered(page)
    first, hit = page.locator(RESULTS).first, body["results"][0]
    overlay = first.locator(".overlay")
    expect(overlay).to_be_visible()
    loaded(page, overlay)
    src = overlay.get_attribute("src")
    assert src is not None and "explain.png" in src and src in hit["explain"]["overlay_urls"]
    screenshot(page, "02-explain-overlay")

    select = first.locator("select.word")
    expect(select.locator("option")).to_have_text(hit["explain"]["words"])
    other = (hit["explain"]["overlay_urls"].index(src) + 1) % len(hit["explain"]["words"])
    select.select_option(index=other)
    expect(overlay).to_have_attribute("src", hit["explain"]["overlay_urls"][other])
    loaded(page, overlay)
    screenshot(page, "03-explain-other-word")

    # Keyboard: the tile link, then the heatmap toggle, are Tab stops; Space toggles the overlay.
    first.locator("a.tile").focus()
    page.keyboard.press("Tab")
    toggle = first.locator("button.toggle")
    expect(toggle).to_be_focused()
    page.keyboard.press("Space")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(overlay).to_be_hidden()
    page.keyboard.press("Space")
    expect(overlay).to_be_visible()


def test_rerank_off_shows_the_coarse_order(open_page: PageFactory):
    page = open_page()
    reranked = text_search(page, query="a roundabout with trees", k=5)
    assert all(hit["fine_score"] is not None for hit in reranked["results"])

    with page.expect_request("**/search/text") as sent, page.expect_response("**/search/text") as got:
        page.uncheck("#rerank")
    assert sent_json(sent.value)["rerank"] == "none"
    coarse = got.value.json()
    rendered(page)
    assert all(hit["fine_score"] is None for hit in coarse["results"])
    assert shown_ids(page) == [hit["id"] for hit in coarse["results"]]
    for card in page.locator(RESULTS).all():
        expect(card.locator(".score")).not_to_contain_text("fine")
    screenshot(page, "04-coarse-order")


def test_uploading_an_image_finds_it_and_its_captions(open_page: PageFactory, live_server: LiveServer):
    page = open_page()
    page.fill("#k", "5")
    tile = live_server.index.archive / "images" / "synth_000003.png"
    with page.expect_response("**/search/image") as got:
        page.set_input_files("#image", str(tile))
    body = got.value.json()
    rendered(page)
    expect(page.locator(RESULTS)).to_have_count(5)
    assert shown_ids(page)[0] == "images/synth_000003.png"  # the same pixels come first
    expect(page.locator("#status")).to_contain_text("5 images like synth_000003.png")
    loaded(page, page.locator("#status img.query-thumb"))
    images_loaded(page, ".thumb")
    assert shown_ids(page) == [hit["id"] for hit in body["results"]]
    screenshot(page, "05-image-query")

    page.fill("#k", "40")  # deep enough for repeated caption texts (see below)
    with page.expect_response("**/search/image") as got:
        page.select_option("#target", "captions")  # re-runs the upload as image -> text, reranked
    captions = got.value.json()
    assert captions["target"] == "captions"
    texts = [hit["caption"] for hit in captions["results"]]
    # The page asks for each caption text once: a template line shared by near-twin scenes would
    # otherwise fill the list (the precondition shows it would here).
    asked = {
        distinct: [
            h["caption"]
            for h in httpx.post(
                f"{live_server.url}/search/image",
                files={"file": (tile.name, tile.read_bytes(), "image/png")},
                data={"k": "40", "target": "captions", "rerank": "ftf", "distinct": distinct},
            ).json()["results"]
        ]
        for distinct in ("true", "false")
    }
    assert len(set(asked["false"])) < len(asked["false"])
    assert texts == asked["true"] and len(set(texts)) == len(texts)
    assert all(hit["fine_score"] is not None for hit in captions["results"])
    rendered(page)
    expect(page.locator(f"{RESULTS} .caption-text")).to_have_count(len(captions["results"]))
    for card, hit in zip(page.locator(RESULTS).all(), captions["results"], strict=True):
        expect(card.locator(".caption-text")).to_contain_text(hit["caption"])
        expect(card.locator(".file")).to_have_text(PurePosixPath(hit["image_id"]).name)
    images_loaded(page, ".thumb")
    screenshot(page, "06-image-to-captions")

    with page.expect_response("**/search/image") as got:
        page.uncheck("#rerank")  # image -> text in the coarse order
    assert all(hit["fine_score"] is None for hit in got.value.json()["results"])
    rendered(page)


def test_dropping_a_file_or_similar_searches_by_example(open_page: PageFactory, live_server: LiveServer):
    page = open_page()
    page.fill("#k", "4")
    data = (live_server.index.archive / "images" / "synth_000021.png").read_bytes()
    with page.expect_response("**/search/image"):
        page.evaluate(
            """bytes => {
                const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
                const transfer = new DataTransfer();
                transfer.items.add(file);
                document.getElementById("drop").dispatchEvent(
                    new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
            }""",
            list(data),
        )
    rendered(page)
    assert shown_ids(page)[0] == "images/synth_000021.png"
    expect(page.locator("#status")).to_contain_text("like dropped.png")

    second = shown_ids(page)[1]
    with page.expect_response("**/search/image"):
        page.locator(RESULTS).nth(1).get_by_role("button", name="Images like").click()
    rendered(page)
    assert shown_ids(page)[0] == second  # "Similar" searches with that result's own image


def test_a_bad_upload_shows_the_servers_message(open_page: PageFactory):
    page = open_page()
    text_search(page, k=3)
    not_an_image: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not pixels"}
    with page.expect_response("**/search/image") as got:
        page.set_input_files("#image", files=[not_an_image])
    assert got.value.status == 415
    message = got.value.json()["error"]["message"]
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("not a recognised image")
    expect(alert).to_contain_text(message)
    expect(page.locator(RESULTS)).to_have_count(0)  # the old results are not left looking current
    screenshot(page, "07-bad-upload")


def test_filters_are_sent_and_respected(open_page: PageFactory):
    page = open_page()
    page.fill("#lon-min", "2")
    page.fill("#query", QUERY)
    page.press("#query", "Enter")
    expect(page.get_by_role("alert")).to_contain_text("give all four numbers")  # checked before sending

    for selector, value in (("#lat-min", "43"), ("#lon-max", "8"), ("#lat-max", "49")):
        page.fill(selector, value)
    page.fill("#time-from", "2021-01-01")
    page.fill("#time-to", "2024-12-31")
    page.fill("#sensor", "sentinel-2, worldview-3")
    with page.expect_request("**/search/text") as sent:
        body = text_search(page, k=4)
    assert sent_json(sent.value)["filters"] == {
        "bbox": [2, 43, 8, 49],
        "time_from": "2021-01-01T00:00:00Z",
        "time_to": "2024-12-31T23:59:59Z",
        "sensor": ["sentinel-2", "worldview-3"],
    }
    expect(page.get_by_role("alert")).to_be_hidden()
    assert body["results"], "the filters match some of the 40 demo images"
    expect(page.locator(RESULTS)).to_have_count(len(body["results"]))
    for hit in body["results"]:
        assert hit["metadata"]["sensor"] in ("sentinel-2", "worldview-3")
        assert "2021-01-01" <= hit["metadata"]["time"][:10] <= "2024-12-31"
    screenshot(page, "08-filters")


def test_a_tile_opens_the_full_image_by_click_or_keyboard(open_page: PageFactory):
    page = open_page()
    body = text_search(page, k=3)
    viewer = page.locator("#viewer")
    page.locator(f"{RESULTS} a.tile").first.click()
    expect(viewer).to_be_visible()
    expect(page.locator("#viewer-title")).to_have_text(PurePosixPath(body["results"][0]["id"]).name)
    expect(page.locator("#viewer-img")).to_have_attribute("src", body["results"][0]["image_url"])
    loaded(page, page.locator("#viewer-img"))
    screenshot(page, "09-full-image")
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()

    page.locator(f"{RESULTS} a.tile").nth(1).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#viewer-title")).to_have_text(PurePosixPath(body["results"][1]["id"]).name)
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()


def test_phone_width_has_no_horizontal_scroll(open_page: PageFactory):
    page = open_page(viewport=PHONE)
    no_horizontal_scroll(page, PHONE["width"])
    page.locator("#options summary").click()  # closed by default on a phone
    page.check("#explain")
    text_search(page, k=6)
    expect(page.locator(".overlay")).to_have_count(6)
    images_loaded(page, ".overlay")
    no_horizontal_scroll(page, PHONE["width"])
    screenshot(page, "10-phone")


@pytest.mark.parametrize("path", ["/", "/app.js", "/app.css"])
def test_the_page_is_small_local_files(live_server: LiveServer, path: str):
    response = httpx.get(live_server.url + path, timeout=10)
    assert response.status_code == 200
    assert len(response.content) < 32_000
    assert not re.search(r"https?://|\s(src|href)=\"//", response.text), "everything is served locally"
    if path == "/":
        assert response.headers["content-type"].startswith("text/html")
        assert 'src="app.js"' in response.text and 'href="app.css"' in response.text


def test_the_api_keeps_its_routes_and_error_shape_beside_the_page(live_server: LiveServer):
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        missing = client.get("/no-such-page.html")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
