"""Admission (bounded in-flight searches) and access (API keys, per-key rate limits).

Rate limits are fixed one-minute windows. With Redis configured the counters live there (shared by
every replica). When Redis fails, or its circuit breaker is open, ``fallback`` decides: ``"local"``
(fail open: each process counts on its own, so an outage loosens the limit rather than refusing
traffic) or ``"refuse"`` (fail closed: limited requests get 503 until Redis is back).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
import structlog

from rsir.service.breaker import CircuitBreaker

log = structlog.get_logger(__name__)
WINDOW_S = 60
Fallback = Literal["local", "refuse"]


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    retry_after_s: int | None = None


@dataclass(frozen=True)
class Identity:
    """Who a request counts against: ``key:<digest>`` or ``ip:<address>``; ``per_minute`` None = no limit."""

    name: str
    per_minute: int | None


class InFlight:
    """Counts searches in progress; refuses (never queues) past the bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def try_enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis | None,
        breaker: CircuitBreaker | None = None,
        fallback: Fallback = "local",
    ) -> None:
        self.redis = redis
        self.breaker = breaker
        self.fallback = fallback
        self._local: dict[str, tuple[int, int]] = {}  # identity -> (window, count)

    async def hit(self, identity: str, per_minute: int) -> Refusal | None:
        """Count one request of ``identity``; a :class:`Refusal` when it is over ``per_minute``."""
        now = time.time()
        window = int(now // WINDOW_S)
        count = await self._count(identity, window)
        if count is None:
            return Refusal(
                503,
                "rate_limit_unavailable",
                "the rate limiter's store is unavailable and this server refuses rather than guesses; "
                "retry shortly",
                5,
            )
        if count <= per_minute:
            return None
        retry = max(1, math.ceil((window + 1) * WINDOW_S - now))
        return Refusal(
            429,
            "rate_limited",
            f"rate limit of {per_minute} requests per minute exceeded; retry in {retry} s",
            retry,
        )

    async def _count(self, identity: str, window: int) -> int | None:
        if self.redis is not None:
            if self.breaker is None or self.breaker.allow():
                key = f"rsir:rate:{identity}:{window}"
                try:
                    async with self.redis.pipeline(transaction=True) as pipe:
                        pipe.incr(key)
                        pipe.expire(key, WINDOW_S * 2)
                        count, _ = await pipe.execute()
                    if self.breaker is not None:
                        self.breaker.success()
                    return int(count)
                except (aioredis.RedisError, OSError) as exc:
                    log.warning("rate_limit_redis_unavailable", error=f"{type(exc).__name__}: {exc}")
                    if self.breaker is not None:
                        self.breaker.failure()
            if self.fallback == "refuse":
                return None
        seen_window, count = self._local.get(identity, (window, 0))
        count = count + 1 if seen_window == window else 1
        self._local[identity] = (window, count)
        return count


class Access:
    """Who a request is (API key check) and whether it may spend one more of its quota."""

    def __init__(
        self, api_keys: dict[str, int], anonymous_per_minute: int | None, limiter: RateLimiter
    ) -> None:
        self.api_keys = api_keys
        self.anonymous_per_minute = anonymous_per_minute
        self.limiter = limiter
        # Signed URLs carry a key's digest, never the key: this maps it back to the key's limit.
        self.by_digest = {key_digest(k): limit for k, limit in api_keys.items()}

    def identify(self, key: str | None, client: str) -> Identity | Refusal:
        """The key check alone: spends no quota, so a request can be validated before it counts."""
        if self.api_keys:
            if not key:
                return Refusal(
                    401, "missing_api_key", "this service needs an API key in the X-API-Key header"
                )
            if key not in self.api_keys:
                return Refusal(403, "invalid_api_key", "the API key in X-API-Key is not valid")
            limit = self.api_keys[key]
            # The key itself is never used as a Redis key or logged: only a short, stable digest.
            return Identity(f"key:{key_digest(key)}", limit if limit > 0 else None)
        return Identity(f"ip:{client}", self.anonymous_per_minute or None)

    def for_digest(self, digest: str) -> Identity | None:
        limit = self.by_digest.get(digest)
        return None if limit is None else Identity(f"key:{digest}", limit if limit > 0 else None)

    async def spend(self, identity: Identity) -> Refusal | None:
        if identity.per_minute is None:
            return None
        return await self.limiter.hit(identity.name, identity.per_minute)

    async def check(self, key: str | None, client: str) -> Refusal | None:
        """Identify and spend in one step."""
        who = self.identify(key, client)
        return who if isinstance(who, Refusal) else await self.spend(who)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]
