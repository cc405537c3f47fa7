"""``X-Forwarded-For`` is believed only from configured proxies (issue 21, item 6): by default a
local client cannot pick its own address, and with it a fresh anonymous rate limit. Over real HTTP,
so uvicorn's own proxy-header handling is what is tested."""

from __future__ import annotations

import httpx

from tests.service.conftest import ServerFactory, wait_clear_of_minute_boundary


def _statuses(client: httpx.Client, forwarded_for: list[str]) -> list[int]:
    return [
        client.post(
            "/search/text", json={"query": "forwarded", "k": 1}, headers={"X-Forwarded-For": ip}
        ).status_code
        for ip in forwarded_for
    ]


def test_forwarded_for_from_an_untrusted_peer_is_ignored(serve: ServerFactory):
    client = serve(anonymous_rate_per_minute=2).client()
    wait_clear_of_minute_boundary()
    assert _statuses(client, ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]) == [
        200,
        200,
        429,
        429,
    ]


def test_forwarded_for_from_a_configured_proxy_is_the_client(serve: ServerFactory):
    client = serve(anonymous_rate_per_minute=2, forwarded_allow_ips="127.0.0.1").client()
    wait_clear_of_minute_boundary()
    assert _statuses(client, ["203.0.113.1"] * 3) == [200, 200, 429]
    assert _statuses(client, ["203.0.113.2"]) == [200]  # another client behind the same proxy
