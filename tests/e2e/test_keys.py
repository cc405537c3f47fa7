"""The search page against a service that needs an API key: the user types it once, it is kept for
the tab only (sessionStorage), sent with every search, and the result images (signed URLs) load in
plain ``<img>`` tags that cannot send it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import KEY, LAPTOP, LiveServer, screenshot
from tests.e2e.test_page import RESULTS, expect, images_loaded, text_search

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.mark.slow
def test_the_key_is_typed_once_kept_for_the_tab_and_opens_the_images(
    browser: Browser, keyed_server: LiveServer
):
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(10_000)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(keyed_server.url + "/")

        # No key yet: the server's refusal is shown and the key field is offered.
        page.fill("#query", "planes")
        page.press("#query", "Enter")
        expect(page.get_by_role("alert")).to_contain_text("missing_api_key")
        expect(page.locator("#api-key")).to_be_focused()

        page.fill("#api-key", KEY)
        page.dispatch_event("#api-key", "change")
        with page.expect_request("**/search/text") as sent:
            body: dict[str, Any] = text_search(page, k=4)
        assert sent.value.headers["x-api-key"] == KEY
        expect(page.locator(RESULTS)).to_have_count(4)
        assert all("?t=" in hit["thumbnail_url"] for hit in body["results"])
        images_loaded(page, ".thumb")  # signed URLs: <img> needs no header
        expect(page.get_by_role("alert")).to_be_hidden()
        screenshot(page, "20-keyed-results")

        # Kept for the tab (a reload keeps it); never in localStorage or a cookie.
        page.reload()
        expect(page.locator("#api-key")).to_have_value(KEY)
        assert page.evaluate("localStorage.length") == 0 and context.cookies() == []
        # Another tab starts without it.
        other = context.new_page()
        other.goto(keyed_server.url + "/")
        expect(other.locator("#api-key")).to_have_value("")
    finally:
        context.close()
    assert not errors, errors
