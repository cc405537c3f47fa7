"""The result cache: Redis (``redis.asyncio``) when configured, else an in-process LRU.

A cache can only make a request faster: every Redis error or timeout is swallowed, counted, and the
request is answered uncached. Values are the serialised response bodies.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog

from rsir.service.breaker import CircuitBreaker
from rsir.service.metrics import Metrics

log = structlog.get_logger(__name__)


def cache_key(model_id: str, index_version: str, route: str, request: dict[str, Any]) -> str:
    """Hash of the model, the index version and the normalised request (same request, same key)."""
    body = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{model_id}\0{index_version}\0{route}\0{body}".encode()).hexdigest()
    return f"rsir:result:{digest}"


def normalise_query(text: str) -> str:
    """The form two queries share when the model cannot tell them apart (CLIP lower-cases and
    collapses whitespace before tokenising)."""
    return " ".join(text.split()).lower()


class ResultCache(Protocol):
    kind: str
    enabled: bool

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes) -> None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class LRUCache:
    """Bounded in-process cache with a TTL; ``entries=0`` disables it."""

    kind = "lru"

    def __init__(self, entries: int, ttl_s: float, metrics: Metrics) -> None:
        self.entries = entries
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.enabled = entries > 0
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        if not self.enabled:
            return None
        item = self._data.get(key)
        if item is None or item[0] < time.monotonic():
            self._data.pop(key, None)
            self.metrics.cache.labels("miss").inc()
            return None
        self._data.move_to_end(key)
        self.metrics.cache.labels("hit").inc()
        return item[1]

    async def set(self, key: str, value: bytes) -> None:
        if self.entries <= 0:
            return
        self._data[key] = (time.monotonic() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis with bounded timeouts behind a circuit breaker; never raises to the caller. While the
    breaker is open, lookups skip Redis at once (counted as ``skipped``)."""

    kind = "redis"

    def __init__(
        self, url: str, ttl_s: int, timeout_ms: float, metrics: Metrics, breaker: CircuitBreaker | None = None
    ) -> None:
        timeout = timeout_ms / 1000.0
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.breaker = breaker
        self.enabled = True

    async def get(self, key: str) -> bytes | None:
        if self.breaker is not None and not self.breaker.allow():
            self.metrics.cache.labels("skipped").inc()
            return None
        try:
            value: bytes | None = await self.client.get(key)
        except (aioredis.RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        self._succeeded()
        self.metrics.cache.labels("hit" if value is not None else "miss").inc()
        return value

    async def set(self, key: str, value: bytes) -> None:
        if self.breaker is not None and not self.breaker.allow():
            return
        try:
            await self.client.set(key, value, ex=self.ttl_s)
        except (aioredis.RedisError, OSError) as exc:
            self._failed("set", exc)
            return
        self._succeeded()

    async def ping(self) -> bool:
        if self.breaker is not None and not self.breaker.allow():
            return False  # the breaker's own probe is what finds Redis back
        try:
            return bool(await self.client.ping())  # type: ignore[misc]
        except (aioredis.RedisError, OSError):
            return False

    async def probe(self) -> bool:
        """A ping that ignores the breaker (the breaker's own probe)."""
        return bool(await self.client.ping())  # type: ignore[misc]

    async def close(self) -> None:
        await self.client.aclose()

    def _succeeded(self) -> None:
        if self.breaker is not None:
            self.breaker.success()

    def _failed(self, op: str, exc: Exception) -> None:
        self.metrics.cache.labels("error").inc()
        if self.breaker is not None:
            self.breaker.failure()
        log.warning("cache_unavailable", op=op, error=f"{type(exc).__name__}: {exc}")
