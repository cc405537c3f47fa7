"""Admission (bounded in-flight searches) and access (API keys, per-key rate limits).

Rate limits are fixed one-minute windows. With Redis configured the counters live there (shared by
every replica); when Redis fails, or none is configured, each process counts on its own, so a Redis
outage loosens the limit rather than refusing traffic.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

log = structlog.get_logger(__name__)
WINDOW_S = 60


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    retry_after_s: int | None = None


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
    def __init__(self, redis: aioredis.Redis | None) -> None:
        self.redis = redis
        self._local: dict[str, tuple[int, int]] = {}  # identity -> (window, count)

    async def hit(self, identity: str, per_minute: int) -> Refusal | None:
        """Count one request of ``identity``; a :class:`Refusal` when it is over ``per_minute``."""
        now = time.time()
        window = int(now // WINDOW_S)
        count = await self._count(identity, window)
        if count <= per_minute:
            return None
        retry = max(1, math.ceil((window + 1) * WINDOW_S - now))
        return Refusal(
            429,
            "rate_limited",
            f"rate limit of {per_minute} requests per minute exceeded; retry in {retry} s",
            retry,
        )

    async def _count(self, identity: str, window: int) -> int:
        if self.redis is not None:
            key = f"rsir:rate:{identity}:{window}"
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, WINDOW_S * 2)
                    count, _ = await pipe.execute()
                return int(count)
            except (aioredis.RedisError, OSError) as exc:
                log.warning("rate_limit_redis_unavailable", error=f"{type(exc).__name__}: {exc}")
        seen_window, count = self._local.get(identity, (window, 0))
        count = count + 1 if seen_window == window else 1
        self._local[identity] = (window, count)
        return count


class Access:
    """API-key check plus rate limit: ``None`` when the request may go on."""

    def __init__(
        self, api_keys: dict[str, int], anonymous_per_minute: int | None, limiter: RateLimiter
    ) -> None:
        self.api_keys = api_keys
        self.anonymous_per_minute = anonymous_per_minute
        self.limiter = limiter

    async def check(self, key: str | None, client: str) -> Refusal | None:
        if self.api_keys:
            if not key:
                return Refusal(
                    401, "missing_api_key", "this service needs an API key in the X-API-Key header"
                )
            if key not in self.api_keys:
                return Refusal(403, "invalid_api_key", "the API key in X-API-Key is not valid")
            limit = self.api_keys[key]
            # The key itself is never used as a Redis key or logged: only a short, stable digest.
            return await self.limiter.hit(f"key:{_digest(key)}", limit) if limit > 0 else None
        if self.anonymous_per_minute:
            return await self.limiter.hit(f"ip:{client}", self.anonymous_per_minute)
        return None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]
