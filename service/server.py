"""The uvicorn configuration of a service, built from its settings in one place (``rsir serve`` and
the tests' live servers both use it), so the server-level limits are the ones tested.

Server-level bounds on slow or idle clients: headers must arrive within ``header_timeout_s`` of the
connection opening or of the previous response (uvicorn has no such timeout of its own: a client
sending one header byte a second would hold its connection forever), idle keep-alive connections
close after ``keep_alive_s``, and the body's own deadline is the middleware's (``body_timeout_s``).
Forwarded headers are believed only from ``forwarded_allow_ips``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from rsir.service.settings import Settings


def with_header_timeout(base: type[asyncio.Protocol], timeout_s: float) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's h11 or httptools protocol) closing connections whose next request's
    headers are not complete ``timeout_s`` after the connection opened or the last response ended.

    Both protocols create a new ``cycle`` when a request's headers are complete: an unchanged
    ``cycle`` when the timer fires means no request arrived in time.
    """

    class HeaderTimeoutProtocol(base):  # type: ignore[valid-type, misc]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._expect_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._expect_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _expect_headers(self) -> None:
            # One timer per connection: a busy keep-alive connection re-arms it, never piles them up.
            if self._header_timer is not None:
                self._header_timer.cancel()
            waiting_on = self.cycle

            def expire() -> None:
                if self.cycle is waiting_on and not self.transport.is_closing():
                    self.transport.close()

            self._header_timer = self.loop.call_later(timeout_s, expire)

    return HeaderTimeoutProtocol


def uvicorn_config(app: ASGIApp, settings: Settings, **overrides: Any) -> uvicorn.Config:
    trusted = settings.forwarded_allow_ips
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # the app logs one structured line per request itself
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": max(1, round(settings.keep_alive_s)),
        "limit_concurrency": settings.max_connections,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: then any local
        # client could pick its own address, and with it a fresh anonymous rate limit.
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or "",
        "http": with_header_timeout(AutoHTTPProtocol, settings.header_timeout_s),
    }
    return uvicorn.Config(app, **(values | overrides))
