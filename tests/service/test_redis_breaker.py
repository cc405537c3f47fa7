"""A Redis that accepts connections but never answers (issue 21, item 4): after a few timeouts the
circuit breaker skips Redis, so requests stop paying the timeout; a background probe finds Redis
back and the cache and the shared rate limit resume. The rate limiter's fallback is a setting: count
per process (fail open) or refuse with 503 (fail closed).

The hung Redis is a real TCP server that accepts and never replies; "back" is the same address
relaying to a real ``redis-server``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.service.conftest import (
    RedisProcess,
    ServerFactory,
    assert_error,
    metric,
    wait_clear_of_minute_boundary,
)

TIMEOUT_MS = 400.0


class HangingRedis:
    """Listens on a local port. While ``hung``, accepts connections and never answers; otherwise
    relays each new connection to ``upstream_port`` (a real redis-server)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hung = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self.hung:
                self._held.append(conn)  # read nothing, answer nothing
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def recover(self) -> None:
        self.hung = False
        for conn in self._held:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def hanging(redis_server: RedisProcess) -> Iterator[HangingRedis]:
    server = HangingRedis(redis_server.port)
    yield server
    server.close()


def _timed_search(client: httpx.Client, query: str, key: str) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    response = client.post("/search/text", json={"query": query, "k": 2}, headers={"X-API-Key": key})
    return time.perf_counter() - t0, response


def test_the_breaker_skips_a_hung_redis_and_closes_when_it_is_back(
    serve: ServerFactory, hanging: HangingRedis, redis_server: RedisProcess
):
    server = serve(
        redis_url=hanging.url,
        redis_timeout_ms=TIMEOUT_MS,
        redis_breaker_failures=3,
        redis_probe_s=0.2,
        api_keys={"key": 1000},
    )
    client = server.client()
    first, response = _timed_search(client, "hung redis 0", "key")
    assert response.status_code == 200, response.text
    # Rate limit, cache get and cache set each waited for the timeout: three failures, breaker open.
    assert first >= 2 * TIMEOUT_MS / 1000
    later = []
    for n in range(1, 11):
        seconds, response = _timed_search(client, f"hung redis {n}", "key")
        assert response.status_code == 200, response.text
        later.append(seconds)
    # No request touches Redis any more: each is far under one timeout (the old code paid three).
    assert max(later) < TIMEOUT_MS / 1000, later
    assert metric(client, "rsir_redis_breaker_open", "key") == 1
    assert metric(client, "rsir_cache_total", "key", result="skipped") >= 10
    ready = client.get("/readyz")
    assert ready.json()["cache"] == {"kind": "redis", "ok": False}
    assert ready.elapsed.total_seconds() < TIMEOUT_MS / 1000  # readiness does not wait on it either

    hanging.recover()
    deadline = time.monotonic() + 15
    while metric(client, "rsir_redis_breaker_open", "key") != 0:
        assert time.monotonic() < deadline, "the breaker never closed after Redis came back"
        time.sleep(0.1)
    _, response = _timed_search(client, "redis is back", "key")
    assert response.status_code == 200 and response.json()["cache"] == "miss"
    _, again = _timed_search(client, "redis is back", "key")
    assert again.json()["cache"] == "hit"
    assert redis_server.keys("rsir:result:*") and redis_server.keys("rsir:rate:*")


def test_fail_closed_refuses_limited_keys_while_redis_is_down(serve: ServerFactory, hanging: HangingRedis):
    server = serve(
        redis_url=hanging.url,
        redis_timeout_ms=TIMEOUT_MS,
        redis_breaker_failures=1,
        redis_probe_s=0.2,
        rate_limit_fallback="refuse",
        api_keys={"limited": 100, "unlimited": 0},
    )
    client = server.client()
    for n in range(3):
        seconds, response = _timed_search(client, f"closed {n}", "limited")
        error = assert_error(response, 503, "rate_limit_unavailable")
        assert "retry" in error["message"] and response.headers["retry-after"]
        if n:
            assert seconds < TIMEOUT_MS / 1000  # the breaker is open: refused at once
    # A key without a limit needs no counter: it is served (uncached) all along.
    _, response = _timed_search(client, "closed unlimited", "unlimited")
    assert response.status_code == 200, response.text


def test_fail_open_counts_per_process_while_redis_is_down(serve: ServerFactory, hanging: HangingRedis):
    server = serve(
        redis_url=hanging.url,
        redis_timeout_ms=TIMEOUT_MS,
        redis_breaker_failures=1,
        redis_probe_s=5.0,
        api_keys={"three": 3},
    )
    client = server.client()
    wait_clear_of_minute_boundary(margin_s=8)
    statuses = [_timed_search(client, f"open {n}", "three")[1].status_code for n in range(4)]
    assert statuses == [200, 200, 200, 429]
