"""Admission and access: the bound on searches in flight (429 overloaded), API keys (401/403) and
per-key rate limits (429 rate_limited), counted in Redis or in process."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx

from tests.service.conftest import (
    RedisProcess,
    ServerFactory,
    assert_error,
    metric,
    wait_clear_of_minute_boundary,
)


def _wait_inflight(client: httpx.Client, n: int, timeout_s: float = 10.0) -> None:
    """Until /readyz (never admitted itself) reports ``n`` searches in progress."""
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").json()["inflight"]["now"] != n:
        assert time.monotonic() < deadline, f"never {n} searches in flight"
        time.sleep(0.01)


# A long batch window: a lone search holds the only slot while its batch waits to fill.
HOLD_MS = 800


def test_searches_past_max_inflight_are_refused_with_retry_after(serve: ServerFactory):
    server = serve(max_inflight=1, batch_wait_ms=HOLD_MS)
    client = server.client()
    results: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(5)  # the other five, released together

    def search(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            if n > 0:
                barrier.wait()
            results[n] = c.post("/search/text", json={"query": f"admission probe number {n}"})

    first = threading.Thread(target=search, args=(0,))
    first.start()
    _wait_inflight(client, 1)  # the first search holds the slot now
    others = [threading.Thread(target=search, args=(n,)) for n in range(1, 6)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(timeout=30)

    assert results[0].status_code == 200, results[0].text
    refused = [results[n] for n in range(1, 6)]
    assert all(r.status_code in (200, 429) for r in refused), [r.status_code for r in refused]
    overloaded = [r for r in refused if r.status_code == 429]
    assert overloaded, [r.status_code for r in refused]
    for response in overloaded:
        assert_error(response, 429, "overloaded")
        assert int(response.headers["retry-after"]) >= 1
    assert metric(client, "rsir_rejected_total", reason="overloaded") == len(overloaded)
    # The slot is released once a search is done: one client searching in turn is never refused.
    for n in range(2):
        response = client.post("/search/text", json={"query": f"sequential {n}", "k": 3})
        assert response.status_code == 200, (n, response.text)
    assert client.get("/readyz").json()["inflight"] == {"now": 0, "limit": 1}


def test_image_searches_count_against_the_same_bound(serve: ServerFactory):
    server = serve(max_inflight=1, batch_wait_ms=HOLD_MS)
    client = server.client()
    png = client.get("/images/images/img001.png").content
    held: list[httpx.Response] = []

    def image_search() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            held.append(c.post("/search/image", files={"file": ("q.png", png, "image/png")}))

    first = threading.Thread(target=image_search)
    first.start()
    _wait_inflight(client, 1)
    text = client.post("/search/text", json={"query": "held while the image waits"})
    first.join(timeout=30)
    assert held[0].status_code == 200
    assert_error(text, 429, "overloaded")


def test_api_keys_and_rate_limit_in_redis(serve: ServerFactory, redis_server: RedisProcess):
    server = serve(redis_url=redis_server.url, api_keys={"good": 3, "unlimited": 0})
    client = server.client()
    body = {"query": "rate limited query", "k": 2}
    assert_error(client.post("/search/text", json=body), 401, "missing_api_key")
    assert_error(client.post("/search/text", json=body, headers={"X-API-Key": "bad"}), 403, "invalid_api_key")
    # Liveness stays open; the archive's images need a key (or a signed URL, test_access.py).
    assert client.get("/healthz").status_code == 200
    assert_error(client.get("/images/images/img000.png"), 401, "missing_api_key")
    assert client.get("/images/images/img000.png", headers={"X-API-Key": "unlimited"}).status_code == 200
    overlay = "/images/images/img000.png/explain.png?query=boats"
    assert_error(client.get(overlay), 401, "missing_api_key")
    assert client.get(overlay, headers={"X-API-Key": "unlimited"}).status_code == 200

    wait_clear_of_minute_boundary()
    good = {"X-API-Key": "good"}
    for _ in range(3):
        assert client.post("/search/text", json=body, headers=good).status_code == 200
    limited = client.post("/search/text", json=body, headers=good)
    error = assert_error(limited, 429, "rate_limited")
    assert "3 requests per minute" in error["message"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Image searches share the key's budget.
    png = client.get("/images/images/img000.png", headers={"X-API-Key": "unlimited"}).content
    image = client.post("/search/image", files={"file": ("q.png", png, "image/png")}, headers=good)
    assert_error(image, 429, "rate_limited")

    keys = redis_server.keys("rsir:rate:*")
    assert len(keys) == 1 and redis_server.get(keys[0]) == b"5"
    assert "good" not in keys[0].split(":")  # the key is stored as a digest, never in the clear
    assert 0 < redis_server.ttl(keys[0]) <= 120

    # A key with limit 0 is unlimited; refusals are counted by reason.
    for _ in range(5):
        assert client.post("/search/text", json=body, headers={"X-API-Key": "unlimited"}).status_code == 200
    assert metric(client, "rsir_rejected_total", "unlimited", reason="rate_limited") == 2
    assert (
        metric(client, "rsir_rejected_total", "unlimited", reason="missing_api_key") == 3
    )  # search, image, overlay


def test_rate_limit_without_redis_counts_in_process(serve: ServerFactory):
    server = serve(api_keys={"good": 3})
    client = server.client()
    wait_clear_of_minute_boundary()
    statuses = [
        client.post("/search/text", json={"query": "in process"}, headers={"X-API-Key": "good"}).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def test_anonymous_rate_limit_per_client(serve: ServerFactory):
    client = serve(anonymous_rate_per_minute=2).client()
    wait_clear_of_minute_boundary()
    statuses = [client.post("/search/text", json={"query": "anonymous"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_a_client_that_gives_up_does_not_keep_its_slot(serve: ServerFactory):
    server = serve(max_inflight=1, batch_wait_ms=HOLD_MS)
    client = server.client()
    for n in range(3):
        with (
            httpx.Client(base_url=server.url, timeout=0.2) as impatient,
            contextlib.suppress(httpx.TimeoutException),
        ):
            impatient.post("/search/text", json={"query": f"impatient {n}"})
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["inflight"]["now"] != 0:
        assert time.monotonic() < deadline, "a slot stayed taken after its client went away"
        time.sleep(0.05)
    response = client.post("/search/text", json={"query": "after the impatient ones", "k": 2})
    assert response.status_code == 200, response.text
