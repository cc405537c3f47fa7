"""All service settings in one object, read once at start from ``RSIR_*`` environment variables.

``RSIR_API_KEYS`` is JSON: ``{"key": requests_per_minute, ...}`` (0 = unlimited for that key). With no
keys configured the service is open, and ``anonymous_rate_per_minute`` (when set) limits each client
address instead. With keys, the archive's images need a key too: search results carry image URLs
signed with ``url_secret`` (an ``<img>`` cannot send headers), valid for ``url_token_ttl_s``.

The client address is the TCP peer's unless the peer is one of ``forwarded_allow_ips`` (a reverse
proxy): only then are ``X-Forwarded-For`` / ``X-Forwarded-Proto`` believed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rsir.model.encoders import DEFAULT_ARCH
from rsir.model.precision import Precision
from rsir.search.options import HashPpsr, Recall, Rerank, Sar


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RSIR_", extra="ignore")

    # What to serve
    index: Path = Field(Path("data/demo-index"), description="index root (follows CURRENT) or one version")
    model: str = DEFAULT_ARCH
    checkpoint: Path | None = None
    device: str = "auto"
    dtype: Precision = Field(
        Precision.AUTO, description="rerank token dtype: auto (float16 on CUDA, float32 on CPU) or a dtype"
    )
    text_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="the text tower's dtype: auto = the encoder's (float32 on the CPU); bfloat16 is "
        "faster only on CPUs with bfloat16 instructions (lab/HISTORY.md, text encoding)",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    index_poll_s: float = Field(2.0, ge=0, description="how often CURRENT is checked; 0 = never")

    # Search bounds and defaults
    default_k: int = 10
    max_k: int = Field(200, ge=1)
    default_recall_k: int = 100
    max_recall_k: int = Field(1000, ge=1)
    max_query_chars: int = Field(1000, ge=1)
    max_explain_k: int = Field(50, ge=1, description="most results an explain=true request may ask for")
    default_rerank: Rerank = "ftf"
    default_recall: Recall = "dense"
    # None: PPSR on wherever the index holds its data (versions with captions): the methods table in
    # BENCHMARKS.md measured +0.63 mR for it on top of the FTF rerank, for ~0.3 ms per query.
    default_ppsr: bool | None = None
    default_sar: Sar = "off"
    hash_ppsr: HashPpsr = Field(
        "hamming", description="PPSR over hash recall: hamming (the spec's form) or cosine (README, Methods)"
    )
    tau: float = 0.05
    lam: float = 0.5
    nprobe: int | None = Field(
        None, ge=1, description="IVF lists visited per query (approximate indexes only; default 16)"
    )

    # Micro-batching: concurrent requests' queries go through the model in one call
    batch_max: int = Field(16, ge=1, description="1 turns batching off")
    batch_wait_ms: float = Field(2.0, ge=0)

    # Cache: Redis when a URL is given, else an in-process LRU
    redis_url: str | None = None
    redis_timeout_ms: float = Field(100.0, gt=0)
    cache_ttl_s: int = Field(3600, ge=1)
    cache_lru_entries: int = Field(4096, ge=0)

    # Admission and access
    max_inflight: int = Field(64, ge=1, description="searches in progress before 429")
    api_keys: dict[str, int] = Field(default_factory=dict)
    anonymous_rate_per_minute: int | None = None
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)

    # Originals (issue 22 item 3, issue 21 item 8): sources.json paths are relative to the archive root;
    # None resolves them against the root the builder recorded (same machine, same mount).
    archive_root: Path | None = Field(
        None, description="where the indexed archive is mounted here (sources.json paths are under it)"
    )

    # Images
    thumbnail_px: int = Field(256, ge=16, le=1024)
    thumbnail_cache_entries: int = Field(2048, ge=0)

    # Logs
    log_level: str = "info"
    log_json: bool = True

    # Hardening: slow clients, a hung Redis, who may see what (see README "Security and limits")
    header_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within")
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request's body must arrive within (16 MiB at ~0.5 MiB/s)"
    )
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after")
    max_connections: int | None = Field(
        None, ge=1, description="open connections and requests before the server answers 503 (None: no cap)"
    )
    forwarded_allow_ips: str | None = Field(
        None, description="comma-separated proxy addresses whose X-Forwarded-For is believed (None: none)"
    )
    redis_breaker_failures: int = Field(
        3, ge=1, description="consecutive Redis failures that open the breaker"
    )
    redis_probe_s: float = Field(1.0, gt=0, description="how often an open breaker pings Redis")
    rate_limit_fallback: Literal["local", "refuse"] = Field(
        "local", description="when Redis is down: count per process (fail open) or answer 503 (fail closed)"
    )
    url_secret: SecretStr | None = Field(
        None, description="HMAC key of signed image URLs; random per process when unset (set it for replicas)"
    )
    url_token_ttl_s: int = Field(900, ge=10, description="how long a signed image URL stays valid")
    protect_ops: bool = Field(True, description="with API keys, /metrics and /version need a key too")
    image_workers: int = Field(
        2, ge=1, description="threads decoding and drawing images (thumbnails, overlays)"
    )
    image_queue: int = Field(32, ge=1, description="image renders waiting for a thread before 429")

    @field_validator("default_rerank")
    @classmethod
    def _servable_rerank(cls, value: Rerank) -> Rerank:
        if value == "exhaustive":  # the server's engine refuses it (EngineConfig.allow_exhaustive)
            raise ValueError(
                "exhaustive is for measurement (rsir eval); a server default is none, ftf or local"
            )
        return value
