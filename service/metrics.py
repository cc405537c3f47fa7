"""Prometheus metrics of one app instance (its own registry, so tests can run several apps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "rsir_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "rsir_http_request_seconds",
            "whole-request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "rsir_stage_seconds",
            "per-stage latency of searches (queue, encode, recall, rerank, cache)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "rsir_batch_size",
            "queries per batched model call",
            ["kind"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.cache = Counter(
            "rsir_cache",
            "result cache lookups by outcome (hit, miss, error, skipped, unreadable)",
            ["result"],
            registry=r,
        )
        self.errors = Counter("rsir_errors", "error responses by code", ["code"], registry=r)
        self.rejected = Counter(
            "rsir_rejected",
            "requests refused before work (overload, rate limit, auth)",
            ["reason"],
            registry=r,
        )
        self.inflight = Gauge("rsir_inflight_searches", "searches being served now", registry=r)
        self.index_info = Gauge(
            "rsir_index_images", "images in the served index version", ["version"], registry=r
        )
        self.index_switches = Counter(
            "rsir_index_switches", "index versions switched to while serving", registry=r
        )
        self.redis_breaker_open = Gauge(
            "rsir_redis_breaker_open", "1 while Redis is skipped after consecutive failures", registry=r
        )
        self.image_renders = Gauge(
            "rsir_image_renders", "thumbnails and overlays being drawn or waiting for a thread", registry=r
        )
