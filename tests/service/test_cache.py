"""The result cache: a real Redis (hits, keys with a TTL, then the server killed under it) and the
in-process LRU used when no Redis is configured."""

from __future__ import annotations

import json
import time

import httpx

from tests.service.conftest import (
    LiveServer,
    RedisProcess,
    ServerFactory,
    free_port,
    metric,
    wait_clear_of_minute_boundary,
)


def _search(client: httpx.Client, query: str, **extra: object) -> httpx.Response:
    response = client.post("/search/text", json={"query": query, "k": 5, **extra})
    assert response.status_code == 200, response.text
    return response


def _same_results(a: httpx.Response, b: httpx.Response) -> None:
    assert a.json()["results"] == b.json()["results"]
    assert a.json()["index_version"] == b.json()["index_version"]


def test_redis_cache_hits_and_a_dead_redis_only_costs_the_cache(
    serve: ServerFactory, redis_server: RedisProcess
):
    server: LiveServer = serve(redis_url=redis_server.url, redis_timeout_ms=100, cache_ttl_s=120)
    client = server.client()
    assert client.get("/readyz").json()["cache"] == {"kind": "redis", "ok": True}
    hits_before = metric(client, "rsir_cache_total", result="hit")

    first = _search(client, "Boats in the Harbour")
    assert first.json()["cache"] == "miss"
    # The model lower-cases and collapses whitespace, so these are the same query to the cache.
    second = _search(client, "  boats in   the\tHARBOUR ")
    assert second.json()["cache"] == "hit"
    _same_results(first, second)
    assert second.json()["request_id"] != first.json()["request_id"]
    assert set(second.json()["timings_ms"]) == {"cache", "total"}
    assert metric(client, "rsir_cache_total", result="hit") == hits_before + 1

    keys = redis_server.keys("rsir:result:*")
    assert len(keys) == 1
    ttl = redis_server.ttl(keys[0])
    assert 0 < ttl <= 120
    stored = json.loads(redis_server.get(keys[0]) or b"null")
    assert stored["results"] == first.json()["results"]

    # Anything else that changes the answer is another key.
    assert _search(client, "boats in the harbour", rerank="none").json()["cache"] == "miss"
    assert _search(client, "boats in the harbour", k=4).json()["cache"] == "miss"
    assert len(redis_server.keys("rsir:result:*")) == 3

    # Redis dies: searches still answer (uncached, quickly), errors are counted, /readyz says so.
    redis_server.kill()
    errors_before = metric(client, "rsir_cache_total", result="error")
    for query in ("boats in the harbour", "a new query after redis died", "a new query after redis died"):
        started = time.monotonic()
        response = _search(client, query)
        elapsed = time.monotonic() - started
        assert response.json()["cache"] == "miss"
        assert elapsed < 1.5, f"a search took {elapsed:.2f} s with Redis down"
    assert metric(client, "rsir_cache_total", result="error") > errors_before
    started = time.monotonic()
    ready = client.get("/readyz")
    assert time.monotonic() - started < 1.5
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["cache"] == {"kind": "redis", "ok": False}


def test_redis_that_never_answers_is_bounded_by_the_timeout(serve: ServerFactory, tmp_path):
    # A port that accepts connections and never replies: the timeout, not the OS, must end the wait.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        server = serve(redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0", redis_timeout_ms=100)
        client = server.client()
        for query in ("silent redis one", "silent redis two"):
            started = time.monotonic()
            response = _search(client, query)
            assert response.json()["cache"] == "miss"
            assert time.monotonic() - started < 1.5
        assert client.get("/readyz").json()["cache"]["ok"] is False
        assert metric(client, "rsir_cache_total", result="error") >= 2
    finally:
        silent.close()


def test_without_redis_the_in_process_lru_caches(serve: ServerFactory):
    server = serve()
    client = server.client()
    assert client.get("/readyz").json()["cache"] == {"kind": "lru", "ok": True}
    first = _search(client, "forest by the river")
    second = _search(client, "Forest  by the river")
    assert (first.json()["cache"], second.json()["cache"]) == ("miss", "hit")
    _same_results(first, second)
    assert metric(client, "rsir_cache_total", result="hit") == 1
    assert metric(client, "rsir_cache_total", result="miss") == 1

    # Image searches are cached by the image's bytes.
    png = client.get("/images/images/img004.png").content
    files = {"file": ("q.png", png, "image/png")}
    kinds = [client.post("/search/image", files=files).json()["cache"] for _ in range(2)]
    assert kinds == ["miss", "hit"]


def test_a_disabled_lru_reports_cache_off(serve: ServerFactory):
    client = serve(cache_lru_entries=0).client()
    states = [_search(client, "runway with planes").json()["cache"] for _ in range(2)]
    assert states == ["off", "off"]


def test_a_restarted_redis_is_used_again(serve: ServerFactory, redis_server: RedisProcess):
    client = serve(redis_url=redis_server.url, redis_timeout_ms=100).client()
    assert _search(client, "redis comes back").json()["cache"] == "miss"
    redis_server.kill()
    assert _search(client, "redis comes back").json()["cache"] == "miss"
    assert client.get("/readyz").json()["cache"]["ok"] is False
    fresh = redis_server.restart()  # same port, empty
    deadline = time.monotonic() + 10
    while not client.get("/readyz").json()["cache"]["ok"]:
        assert time.monotonic() < deadline, "the server never reconnected to Redis"
        time.sleep(0.1)
    states = [_search(client, "redis comes back").json()["cache"] for _ in range(2)]
    assert states == ["miss", "hit"]
    assert len(fresh.keys("rsir:result:*")) == 1


def test_redis_down_from_the_start_serves_uncached_and_limits_in_process(serve: ServerFactory):
    server = serve(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_ms=100, api_keys={"k": 2})
    client = server.client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["cache"] == {"kind": "redis", "ok": False}
    headers = {"X-API-Key": "k"}
    wait_clear_of_minute_boundary()
    statuses = []
    for _ in range(3):
        response = client.post("/search/text", json={"query": "no redis at all"}, headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert response.json()["cache"] == "miss"
    assert statuses == [200, 200, 429]


def test_replicas_configured_to_score_differently_do_not_share_cached_results(
    serve: ServerFactory, redis_server: RedisProcess
):
    """Same model, same index, one Redis: a replica with another rerank dtype or fusion weight
    computes its own answer instead of serving the other's from the cache."""
    plain = serve(redis_url=redis_server.url, cache_ttl_s=120).client()
    assert _search(plain, "ships at a pier").json()["cache"] == "miss"
    assert _search(plain, "ships at a pier").json()["cache"] == "hit"
    for other in ({"dtype": "bfloat16"}, {"lam": 0.3}):
        client = serve(redis_url=redis_server.url, cache_ttl_s=120, **other).client()
        assert _search(client, "ships at a pier").json()["cache"] == "miss", other
        assert _search(client, "ships at a pier").json()["cache"] == "hit", other
    assert len(redis_server.keys("rsir:result:*")) == 3


def test_a_cached_body_the_response_model_refuses_is_answered_afresh(
    serve: ServerFactory, redis_server: RedisProcess
):
    # E.g. an entry written by another release sharing the Redis, or damaged: never sent as is.
    client = serve(redis_url=redis_server.url).client()
    first = _search(client, "forest by the river")
    (key,) = redis_server.keys("rsir:result:*")
    good = redis_server.get(key)
    assert good is not None
    stored = json.loads(good)
    junk = [
        b"not json",
        json.dumps({**stored, "results": [{"rank": "first"}]}).encode(),
        json.dumps({k: v for k, v in stored.items() if k != "target"}).encode(),
        json.dumps({**stored, "target": "videos"}).encode(),
    ]
    unreadable = metric(client, "rsir_cache_total", result="unreadable")
    for body in junk:
        redis_server.client.set(key, body)
        again = _search(client, "forest by the river")
        assert again.json()["cache"] == "miss", body
        _same_results(first, again)
        assert redis_server.get(key) == good  # the fresh answer replaced it, byte for byte
    assert metric(client, "rsir_cache_total", result="unreadable") == unreadable + len(junk)
    assert _search(client, "forest by the river").json()["cache"] == "hit"
