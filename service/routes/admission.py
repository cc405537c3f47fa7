"""The gate in front of every search, in two steps so that a request the server refuses as invalid
never spends quota: ``authenticate`` (a dependency: the key check, before the body is validated) and
``admitted`` (after validation: the rate limit, then the bound on work in progress).

Image routes take a key or a signed URL (``image_access``); with ``protect_ops`` the operations
endpoints that describe the deployment take a key (``ops_access``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request

from rsir.service.access import Identity, Refusal
from rsir.service.errors import ApiError
from rsir.service.runtime import Runtime, runtime


def _refuse(rt: Runtime, refusal: Refusal) -> ApiError:
    rt.metrics.rejected.labels(refusal.code).inc()
    headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else None
    return ApiError(refusal.status, refusal.code, refusal.message, headers)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(request: Request) -> Identity:
    rt = runtime(request)
    who = rt.access.identify(request.headers.get("x-api-key"), _client(request))
    if isinstance(who, Refusal):
        raise _refuse(rt, who)
    request.state.identity = who
    return who


@asynccontextmanager
async def admitted(request: Request) -> AsyncIterator[None]:
    """Spend one of the caller's quota and hold a slot of work in progress for the block."""
    rt = runtime(request)
    identity: Identity = getattr(request.state, "identity", None) or await authenticate(request)
    # The slot first: a request turned away because the server is busy spends no quota either.
    if not rt.inflight.try_enter():
        rt.metrics.rejected.labels("overloaded").inc()
        raise ApiError(
            429,
            "overloaded",
            f"the server is at its limit of {rt.inflight.limit} searches in progress; retry shortly",
            {"Retry-After": "1"},
        )
    try:
        refusal = await rt.access.spend(identity)
    except BaseException:
        rt.inflight.leave()
        raise
    if refusal is not None:
        rt.inflight.leave()
        raise _refuse(rt, refusal)
    rt.metrics.inflight.inc()
    try:
        yield
    finally:
        rt.inflight.leave()
        rt.metrics.inflight.dec()


async def image_access(request: Request, image_id: str) -> Identity:
    """A valid key, or without keys configured anyone; else a signed URL issued for this image."""
    rt = runtime(request)
    token = request.query_params.get("t")
    if rt.access.api_keys and token is not None and request.headers.get("x-api-key") is None:
        key_id = rt.signer.verify(image_id, token)
        who = rt.access.for_digest(key_id) if key_id is not None else None
        if who is None:
            raise _refuse(
                rt,
                Refusal(
                    403, "invalid_url_token", "this image URL's token is invalid or expired; search again"
                ),
            )
        request.state.identity = who
        return who
    return await authenticate(request)


async def ops_access(request: Request) -> None:
    if runtime(request).settings.protect_ops:
        await authenticate(request)
