"""The gate in front of every search: API key, rate limit, then the bound on work in progress."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request

from service.errors import ApiError
from service.runtime import runtime


async def admit(request: Request) -> AsyncIterator[None]:
    rt = runtime(request)
    client = request.client.host if request.client else "unknown"
    refusal = await rt.access.check(request.headers.get("x-api-key"), client)
    if refusal is not None:
        rt.metrics.rejected.labels(refusal.code).inc()
        headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else None
        raise ApiError(refusal.status, refusal.code, refusal.message, headers)
    if not rt.inflight.try_enter():
        rt.metrics.rejected.labels("overloaded").inc()
        raise ApiError(
            429,
            "overloaded",
            f"the server is at its limit of {rt.inflight.limit} searches in progress; retry shortly",
            {"Retry-After": "1"},
        )
    rt.metrics.inflight.inc()
    try:
        yield
    finally:
        rt.inflight.leave()
        rt.metrics.inflight.dec()
