"""Everything a request needs, built once at start-up from the settings and kept on ``app.state``."""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request
from PIL import Image

from rsir.model.encoders import ClipEncoder
from rsir.search.engine import Plan, SearchResult
from rsir.service.access import Access, InFlight, RateLimiter
from rsir.service.batcher import MicroBatcher
from rsir.service.breaker import CircuitBreaker
from rsir.service.cache import LRUCache, RedisCache, ResultCache
from rsir.service.metrics import Metrics
from rsir.service.serving_index import IndexHolder, ServingIndex
from rsir.service.settings import Settings
from rsir.service.signing import UrlSigner

# Each job carries the index version its request took, so a switch mid-batch changes no answer.
TextJob = tuple[ServingIndex, str, Plan]
ImageJob = tuple[ServingIndex, Image.Image, Plan]


def run_jobs(jobs: Sequence[TextJob] | Sequence[ImageJob]) -> list[SearchResult]:
    """One batch of queries of one modality (each batcher holds one); jobs of different index
    versions (a switch mid-batch) go separately."""
    out: list[SearchResult | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for i, (index, _, _) in enumerate(jobs):
        groups.setdefault(id(index), []).append(i)
    for rows in groups.values():
        index = jobs[rows[0]][0]
        results = index.search([jobs[r][1] for r in rows], [jobs[r][2] for r in rows])
        for r, result in zip(rows, results, strict=True):
            out[r] = result
    return [r for r in out if r is not None]


class BytesLRU:
    """Small in-process cache of rendered thumbnails and overlays."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._data: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple[Any, ...], value: bytes) -> None:
        if self.entries <= 0:
            return
        self._data[key] = value
        while len(self._data) > self.entries:
            self._data.popitem(last=False)


@dataclass
class Runtime:
    settings: Settings
    encoder: ClipEncoder
    holder: IndexHolder
    metrics: Metrics
    cache: ResultCache
    redis: aioredis.Redis | None
    access: Access
    inflight: InFlight
    model_executor: ThreadPoolExecutor
    text_batcher: MicroBatcher[TextJob, SearchResult]
    image_batcher: MicroBatcher[ImageJob, SearchResult]
    images: BytesLRU
    image_executor: ThreadPoolExecutor
    image_slots: asyncio.Semaphore
    signer: UrlSigner
    breaker: CircuitBreaker | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        d = self.encoder.describe()
        return f"{d['arch']}@{d['checkpoint_sha256']}"

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.text_batcher.stop()
        await self.image_batcher.stop()
        if self.breaker is not None:
            await self.breaker.close()
        await self.cache.close()
        if self.redis is not None and self.redis is not getattr(self.cache, "client", None):
            await self.redis.aclose()
        self.model_executor.shutdown(wait=False, cancel_futures=True)
        self.image_executor.shutdown(wait=False, cancel_futures=True)


def build_runtime(settings: Settings, encoder: ClipEncoder, holder: IndexHolder, metrics: Metrics) -> Runtime:
    """Wire the pieces; call from a running event loop (the batchers start their collector tasks)."""
    cache: ResultCache
    redis: aioredis.Redis | None = None
    breaker: CircuitBreaker | None = None
    if settings.redis_url:
        redis_cache = RedisCache(settings.redis_url, settings.cache_ttl_s, settings.redis_timeout_ms, metrics)
        cache, redis = redis_cache, redis_cache.client
        # One breaker for the cache and the rate limiter: they share the client, and so the outage.
        breaker = CircuitBreaker(
            settings.redis_breaker_failures,
            settings.redis_probe_s,
            redis_cache.probe,
            lambda is_open: metrics.redis_breaker_open.set(1 if is_open else 0),
        )
        redis_cache.breaker = breaker
    else:
        cache = LRUCache(settings.cache_lru_entries, settings.cache_ttl_s, metrics)
    # One thread runs the model: torch uses every core within a call, and two concurrent calls
    # would only contend; batching, not threads, is how throughput grows.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rsir-model")
    text_batcher: MicroBatcher[TextJob, SearchResult] = MicroBatcher(
        run_jobs,
        settings.batch_max,
        settings.batch_wait_ms,
        executor,
        lambda n: metrics.batch_size.labels("text").observe(n),
    )
    image_batcher: MicroBatcher[ImageJob, SearchResult] = MicroBatcher(
        run_jobs,
        settings.batch_max,
        settings.batch_wait_ms,
        executor,
        lambda n: metrics.batch_size.labels("image").observe(n),
    )
    text_batcher.start()
    image_batcher.start()
    limiter = RateLimiter(redis, breaker, settings.rate_limit_fallback)
    access = Access(settings.api_keys, settings.anonymous_rate_per_minute, limiter)
    secret = settings.url_secret.get_secret_value().encode() if settings.url_secret else os.urandom(32)
    return Runtime(
        settings=settings,
        encoder=encoder,
        holder=holder,
        metrics=metrics,
        cache=cache,
        redis=redis,
        access=access,
        inflight=InFlight(settings.max_inflight),
        model_executor=executor,
        text_batcher=text_batcher,
        image_batcher=image_batcher,
        images=BytesLRU(settings.thumbnail_cache_entries),
        # Decoding and drawing run here, never on the event loop: one large overlay took the loop for
        # ~100 ms, so a burst of them starved /healthz for seconds (issue 21).
        image_executor=ThreadPoolExecutor(settings.image_workers, thread_name_prefix="rsir-image"),
        image_slots=asyncio.Semaphore(settings.image_workers + settings.image_queue),
        signer=UrlSigner(secret, settings.url_token_ttl_s),
        breaker=breaker,
    )


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt
