"""ASGI middleware: request ids, one structured log line per request, metrics, body size and time
limits (a body must be whole within ``body_timeout_s`` of the request's start: a client dribbling
bytes holds a connection, never a slot of model work, and not for long)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rsir.service.errors import BodyTimeoutError, BodyTooLargeError
from rsir.service.metrics import Metrics

log = structlog.get_logger("rsir.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await _reject_too_large(send_wrapped, request_id, self.max_body_bytes)
                return
            guarded = _limited(receive, self.max_body_bytes, self.body_timeout_s)
            await self.app(scope, guarded, send_wrapped)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(template, str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(seconds)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=template,
                status=status,
                ms=round(seconds * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _limited(receive: Receive, limit: int, timeout_s: float) -> Receive:
    """Counts a streamed (chunked) body as it arrives (no Content-Length does not mean no limit) and
    bounds the time it takes; once the body is whole, later receives (a streaming response waiting
    for the client's disconnect) pass through untimed."""
    seen = 0
    whole = False
    deadline = asyncio.get_running_loop().time() + timeout_s

    async def wrapped() -> Message:
        nonlocal seen, whole
        if whole:
            return await receive()
        left = deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(receive(), max(left, 0.0))
        except TimeoutError:
            raise BodyTimeoutError(timeout_s) from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLargeError(limit)
            whole = not message.get("more_body", False)
        else:
            whole = True
        return message

    return wrapped


async def _reject_too_large(send: Send, request_id: str, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "body_too_large",
                "message": f"request body over the limit of {limit} bytes",
                "request_id": request_id,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
