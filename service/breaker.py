"""A circuit breaker for Redis: a Redis that accepts connections but never answers would otherwise
cost every request its full timeout, for as long as the outage lasts.

Closed, calls go to Redis. After ``failures`` consecutive failures (errors or timeouts) it opens:
callers skip Redis at once (``allow()`` is false) and one background task pings it every ``probe_s``
until it answers, then closes. Only the probe ever waits on a hung Redis while the breaker is open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        probe_s: float,
        probe: Callable[[], Awaitable[bool]],
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.failures = failures
        self.probe_s = probe_s
        self._probe = probe
        self._on_change = on_change
        self._consecutive = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self._task is not None

    def allow(self) -> bool:
        return self._task is None

    def success(self) -> None:
        self._consecutive = 0

    def failure(self) -> None:
        self._consecutive += 1
        if self._consecutive >= self.failures and self._task is None:
            log.warning("redis_breaker_open", failures=self._consecutive, probe_s=self.probe_s)
            self._task = asyncio.get_running_loop().create_task(self._probe_until_healthy())
            if self._on_change is not None:
                self._on_change(True)

    async def _probe_until_healthy(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            try:
                healthy = await self._probe()
            except Exception:  # the probe's failure is the expected state while open
                healthy = False
            if healthy:
                break
        self._task, self._consecutive = None, 0
        log.info("redis_breaker_closed")
        if self._on_change is not None:
            self._on_change(False)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
