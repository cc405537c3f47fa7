"""What query text the service takes (issue 21, items 1 and 11), over real HTTP: text that has no
UTF-8 form (a lone surrogate, which JSON can spell as ``"\\ud800"``) is refused with a 422 naming
it wherever caller text enters; invisible-only text is as empty as whitespace; bodies that are not
JSON are 415 or ``invalid_json``; an explanation that cannot be given says why."""

from __future__ import annotations

import httpx
import pytest

from tests.service.conftest import assert_error


def _raw(client: httpx.Client, text: str, content_type: str = "application/json") -> httpx.Response:
    """POST a JSON body as written (``json=`` would have to encode the surrogate itself, and fails)."""
    return client.post("/search/text", content=text.encode("ascii"), headers={"content-type": content_type})


@pytest.mark.parametrize("explain", ["true", "false"])
def test_a_lone_surrogate_in_the_query_is_422_naming_it(client: httpx.Client, explain: str):
    response = _raw(client, f'{{"query": "\\ud800ships", "k": 5, "explain": {explain}}}')
    error = assert_error(response, 422, "invalid_request")
    assert "query" in error["message"] and "surrogate" in error["message"]
    assert "U+D800" in error["message"]
    # The same text with its pair is valid (an astral character) and is served.
    paired = _raw(client, f'{{"query": "\\ud83d\\udea2 ships", "k": 5, "explain": {explain}}}')
    assert paired.status_code == 200, paired.text
    if explain == "true":
        urls = paired.json()["results"][0]["explain"]["overlay_urls"]
        assert "%F0%9F%9A%A2" in urls[0]  # U+1F6A2 quoted as UTF-8 in the overlay URL


def test_a_lone_surrogate_in_filters_is_422(client: httpx.Client):
    for field in ("sensor", "tags"):
        response = _raw(client, f'{{"query": "ships", "filters": {{"{field}": ["S2\\udc00"]}}}}')
        error = assert_error(response, 422, "invalid_request")
        assert field in error["message"] and "surrogate" in error["message"]
    upload = client.post(
        "/search/image",
        content=b'{"image_base64": "AAAA", "filters": {"sensor": ["\\ud800"]}}',
        headers={"content-type": "application/json"},
    )
    # pydantic's own JSON parser (the image route's) already refuses the escape as invalid JSON.
    assert_error(upload, 400, "invalid_json")


@pytest.mark.parametrize("query", ["\u200b", "\u200b\u200c\u200d", " \u2060\ufeff ", "\u00ad\u200b\t"])
def test_invisible_only_queries_are_422_like_whitespace(client: httpx.Client, query: str):
    error = assert_error(client.post("/search/text", json={"query": query}), 422, "invalid_request")
    assert "query" in error["message"]
    overlay = client.get("/images/images/img000.png/explain.png", params={"query": query})
    assert "query" in assert_error(overlay, 422, "invalid_request")["message"]
    # Visible text around the same characters is a query.
    assert client.post("/search/text", json={"query": f"{query}boats", "k": 2}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json"])
def test_a_body_that_says_it_is_not_json_is_415(client: httpx.Client, content_type: str):
    response = _raw(client, '{"query": "boats"}', content_type)
    assert "application/json" in assert_error(response, 415, "unsupported_media_type")["message"]


def test_json_flavoured_content_types_are_read(client: httpx.Client):
    for content_type in ("application/json; charset=utf-8", "application/problem+json"):
        assert _raw(client, '{"query": "boats", "k": 2}', content_type).status_code == 200


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_json_is_invalid_json(client: httpx.Client, depth: int):
    nested = '{"query": "boats", "filters": ' + "[" * depth + "]" * depth + "}"
    error = assert_error(_raw(client, nested), 400, "invalid_json")
    assert "JSON" in error["message"]
    image = client.post(
        "/search/image", content=("[" * depth).encode(), headers={"content-type": "application/json"}
    )
    assert_error(image, 400, "invalid_json")


@pytest.mark.parametrize("rerank", ["local", "none"])
def test_explain_without_the_ftf_rerank_says_why(client: httpx.Client, rerank: str):
    body = client.post("/search/text", json={"query": "boats", "k": 3, "explain": True, "rerank": rerank})
    assert body.status_code == 200, body.text
    answer = body.json()
    assert all(hit["explain"] is None for hit in answer["results"])
    assert rerank in answer["explain_note"] and "ftf" in answer["explain_note"]
    ftf = client.post(
        "/search/text", json={"query": "boats", "k": 3, "explain": True, "rerank": "ftf"}
    ).json()
    assert ftf.get("explain_note") is None and all(hit["explain"] for hit in ftf["results"])
    plain = client.post("/search/text", json={"query": "boats", "k": 3, "rerank": rerank}).json()
    assert "explain_note" not in plain  # nothing to explain when nothing was asked
