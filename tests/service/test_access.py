"""API keys guard the archive too (issue 21, item 5): with ``api_keys`` set, images, thumbnails and
overlays need a key or a short-lived signed URL from a search result (HMAC over the id, the expiry
and the searching key's digest), /metrics and /version need a key (``protect_ops``), and requests the
server refuses as invalid spend none of a key's quota."""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import httpx

from rsir.service.access import key_digest
from rsir.service.signing import UrlSigner
from tests.service.conftest import ServerFactory, TinyIndex, assert_error, wait_clear_of_minute_boundary


def _search(client: httpx.Client, key: str, **extra: object) -> dict[str, object]:
    response = client.post(
        "/search/text", json={"query": "boats by the harbour", "k": 3, **extra}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["t"][0]


def test_result_urls_are_signed_and_open_exactly_their_image(serve: ServerFactory, tiny_index: TinyIndex):
    server = serve(api_keys={"alice": 0, "bob": 0})
    client = server.client()
    hits = _search(client, "alice", explain=True)["results"]
    assert isinstance(hits, list)
    first, second = hits[0], hits[1]
    # No header: the signed URLs alone fetch the image, its thumbnail and its overlays.
    original = client.get(first["image_url"])
    assert original.status_code == 200 and original.content == tiny_index.file(first["id"]).read_bytes()
    assert original.headers["cache-control"].startswith("private")
    thumb = client.get(first["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    overlay = client.get(first["explain"]["overlay_urls"][0])
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"

    # Without a key or token: refused. A token is for its image only, and cannot be edited.
    assert_error(client.get(f"/images/{first['id']}"), 401, "missing_api_key")
    assert_error(client.get(f"/images/{first['id']}/thumbnail"), 401, "missing_api_key")
    token = _token(first["image_url"])
    assert_error(client.get(f"/images/{second['id']}", params={"t": token}), 403, "invalid_url_token")
    expires, digest, sig = token.split(".")
    for forged in (
        f"{int(expires) + 3600}.{digest}.{sig}",
        f"{expires}.{key_digest('bob')}.{sig}",
        "x.y.z",
        "",
    ):
        assert_error(client.get(f"/images/{first['id']}", params={"t": forged}), 403, "invalid_url_token")
    # The digest is of the key that searched; the key itself is in no URL.
    assert digest == key_digest("alice") and "alice" not in first["image_url"]

    # A cached answer is signed for whoever asks now.
    again = _search(client, "bob", explain=True)
    assert again["cache"] == "hit"
    assert isinstance(again["results"], list)
    assert _token(again["results"][0]["image_url"]).split(".")[1] == key_digest("bob")
    # A key in the header still works for every image.
    assert client.get(f"/images/{second['id']}", headers={"X-API-Key": "bob"}).status_code == 200


def test_tokens_expire():
    signer = UrlSigner(b"secret", ttl_s=60)
    token = signer.token("images/a.png", "abc", now=1000.0)
    expires = int(token.split(".")[0])
    assert 1060 <= expires <= 1120
    assert signer.verify("images/a.png", token, now=1000.0) == "abc"
    assert signer.verify("images/a.png", token, now=expires + 1) is None
    assert signer.verify("images/b.png", token, now=1000.0) is None
    assert UrlSigner(b"other", ttl_s=60).verify("images/a.png", token, now=1000.0) is None


def test_without_keys_urls_are_plain(client: httpx.Client, tiny_index: TinyIndex):
    hit = client.post("/search/text", json={"query": "plain urls", "k": 1}).json()["results"][0]
    assert hit["image_url"] == f"/images/{hit['id']}" and "?" not in hit["thumbnail_url"]
    assert client.get(hit["image_url"]).status_code == 200


def test_metrics_and_version_need_a_key_when_protected(serve: ServerFactory):
    keyed = serve(api_keys={"ops": 0}).client()
    for path in ("/metrics", "/version"):
        assert_error(keyed.get(path), 401, "missing_api_key")
        assert keyed.get(path, headers={"X-API-Key": "ops"}).status_code == 200
    for path in ("/healthz", "/readyz"):  # probes stay open
        assert keyed.get(path).status_code == 200
    open_ops = serve(api_keys={"ops": 0}, protect_ops=False).client()
    assert open_ops.get("/metrics").status_code == 200 and open_ops.get("/version").status_code == 200


def test_refused_requests_spend_no_quota(serve: ServerFactory):
    client = serve(api_keys={"two": 2}).client()
    key = {"X-API-Key": "two"}
    wait_clear_of_minute_boundary()
    bad = [
        client.post("/search/text", json={"query": "boats", "k": 0}, headers=key),
        client.post("/search/text", json={"query": "   "}, headers=key),
        client.post("/search/text", json={"query": "\u200b"}, headers=key),
        client.post("/search/text", json={"query": "boats", "filters": {"sensor": []}}, headers=key),
        client.post(
            "/search/text", content=b'{"query": "boats"}', headers={**key, "content-type": "text/plain"}
        ),
        client.post("/search/image", files={"file": ("q.png", b"not an image", "image/png")}, headers=key),
        client.get("/images/images/img000.png/explain.png", params={"query": " "}, headers=key),
    ]
    assert [r.status_code for r in bad] == [422, 422, 422, 422, 415, 415, 422]
    statuses = [
        client.post("/search/text", json={"query": f"ok {n}"}, headers=key).status_code for n in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_an_overlay_through_a_signed_url_spends_the_searching_keys_quota(serve: ServerFactory):
    client = serve(api_keys={"three": 3}).client()
    wait_clear_of_minute_boundary()
    hits = _search(client, "three", explain=True)["results"]
    assert isinstance(hits, list)
    urls = hits[0]["explain"]["overlay_urls"]
    assert len(urls) >= 3
    assert client.get(urls[0]).status_code == 200
    assert client.get(urls[1]).status_code == 200
    assert_error(client.get(urls[2]), 429, "rate_limited")
    # Thumbnails and originals run no model: they spend nothing.
    assert client.get(hits[0]["thumbnail_url"]).status_code == 200


def test_requests_turned_away_as_overloaded_spend_no_quota(serve: ServerFactory):
    server = serve(api_keys={"two": 2, "free": 0}, max_inflight=1, batch_wait_ms=800)
    client = server.client()
    wait_clear_of_minute_boundary(margin_s=10)
    held: list[httpx.Response] = []

    def hold() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            held.append(
                c.post("/search/text", json={"query": "holding the slot"}, headers={"X-API-Key": "free"})
            )

    holder = threading.Thread(target=hold)
    holder.start()
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["inflight"]["now"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    key = {"X-API-Key": "two"}
    for n in range(3):
        assert_error(client.post("/search/text", json={"query": f"busy {n}"}, headers=key), 429, "overloaded")
    holder.join(timeout=30)
    assert held[0].status_code == 200
    statuses = [
        client.post("/search/text", json={"query": f"after {n}"}, headers=key).status_code for n in range(3)
    ]
    assert statuses == [200, 200, 429]
