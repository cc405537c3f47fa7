"""How to build an index: the options every build engine (local, Ray) reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rsir.index.tokens import CODECS, Codec
from rsir.index_builder.chips import ChipConfig
from rsir.model.errors import InvalidInputError
from rsir.model.images import DEFAULT_MAX_PIXELS

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class BuildConfig:
    """How to build; the shard size and batch size are part of a plan (they fix the float results)."""

    shard_size: int = 1024
    batch_size: int = 64
    workers: int = 2
    token_codec: Codec = "fp16"
    factory: str = "auto"
    split: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    engine: Engine = "local"
    ray_actors: int = 2
    progress: bool = True  # a progress bar (a person at a terminal)
    # Without the bar: a structured progress line on stderr every this many seconds (None: none), so
    # that `kubectl logs` of an hour-long build says how far it is (index_builder/progress.py).
    progress_log_s: float | None = None
    # CFITR hash heads for this encoder (None: the shipped ones when the shipped model runs, else none).
    hash_heads: Path | None = None
    stop_after_shards: int | None = None  # testing aid: behave like a job killed after N shards
    # What sources.json paths are relative to (None: the archive folder, or the folder holding the
    # archive file); the server resolves them against RSIR_ARCHIVE_ROOT, the same folder mounted there.
    archive_root: Path | None = None
    # Cut georeferenced scenes into chips (None: list the archive as tiles, as before scenes existed;
    # a STAC catalog is always chipped, with ChipConfig's defaults); ``bands``: a preset or R,G,B list.
    chips: ChipConfig | None = None
    bands: str = "rgb"

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.batch_size < 1 or self.workers < 0:
            raise InvalidInputError("shard_size and batch_size must be >= 1 and workers >= 0")
        if self.token_codec not in CODECS:
            raise InvalidInputError(f"token codec must be one of {CODECS}, got {self.token_codec!r}")
        if self.engine not in ("local", "ray"):
            raise InvalidInputError(f"engine must be 'local' or 'ray', got {self.engine!r}")
