"""The index being served, and switching to a newly published version without dropping requests.

A request takes the current :class:`ServingIndex` once and uses it to the end, so a switch (a plain
reference swap, after the new version has loaded in a worker thread) never changes an index under a
running request; the old version's memory maps close when its last request lets go of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from index.originals import Sources, read_sources
from index.versions import CorruptIndexError, IndexFormatError, LoadedIndex, load_index, resolve_version
from model.encoders import ClipEncoder
from model.errors import RsirError
from search.engine import EngineConfig, SearchEngine

log = structlog.get_logger(__name__)


@dataclass
class ServingIndex:
    loaded: LoadedIndex
    engine: SearchEngine
    sources: Sources
    position: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.position = {ident: i for i, ident in enumerate(self.loaded.gallery.ids)}

    @property
    def version(self) -> str:
        return self.loaded.folder.name

    def live_position(self, image_id: str) -> int | None:
        """Gallery index of a live (not deleted) image id."""
        i = self.position.get(image_id)
        return i if i is not None and bool(self.engine.live_images[i]) else None


def open_serving_index(path: Path, encoder: ClipEncoder, config: EngineConfig) -> ServingIndex:
    loaded = load_index(path, encoder.describe())
    return ServingIndex(loaded, SearchEngine.from_index(loaded, encoder, config), read_sources(loaded.folder))


class IndexHolder:
    def __init__(
        self,
        root: Path,
        encoder: ClipEncoder,
        config: EngineConfig,
        on_switch: Callable[[ServingIndex], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.encoder = encoder
        self.config = config
        self.on_switch = on_switch
        self.current = open_serving_index(self.root, encoder, config)
        # Public (shown by /readyz): version and file names, never paths.
        self.last_error: str | None = None
        self._failed: tuple[str, tuple[float, int]] | None = None  # (version, its files' state) that failed

    async def refresh(self) -> bool:
        """Load and switch to the version ``CURRENT`` names now, if it is a different one.

        A problem is logged once, when it first appears (not on every poll), and a version that
        failed to load is not retried until one of its files changes.
        """
        try:
            target = resolve_version(self.root)
        except (RsirError, OSError, ValueError) as exc:  # e.g. CURRENT unreadable or not text
            self._set_error("CURRENT: unreadable or names no version", str(exc))
            return False
        if target.name == self.current.version:
            self._set_error(None)  # served again (e.g. CURRENT rolled back): nothing is wrong now
            return False
        stamp = (target.name, _fingerprint(target))
        if stamp == self._failed:
            return False
        try:
            fresh = await asyncio.to_thread(open_serving_index, target, self.encoder, self.config)
        except Exception as exc:
            # Keep serving the old version: a broken publish must not take the service down, nor end
            # the watch (a corrupt FAISS file raises RuntimeError, not one of rsir's errors).
            self._failed = stamp
            self._set_error(_public(exc, target), f"{type(exc).__name__}: {exc}")
            return False
        previous, self.current = self.current.version, fresh
        self._set_error(None)
        log.info("index_switched", previous=previous, version=fresh.version, images=len(fresh.loaded.gallery))
        if self.on_switch is not None:
            self.on_switch(fresh)
        return True

    def _set_error(self, public: str | None, detail: str = "") -> None:
        if public is not None and public != self.last_error:
            log.error("index_switch_failed", problem=public, detail=detail)
        elif public is None and self.last_error is not None:
            log.info("index_switch_error_cleared", was=self.last_error)
        self.last_error = public

    async def watch(self, poll_s: float) -> None:
        while True:
            await asyncio.sleep(poll_s)
            await self.refresh()


def _fingerprint(folder: Path) -> tuple[float, int]:
    """(latest modification time, total size) of a version's files: changes when any file does."""
    latest, total = -1.0, 0
    try:
        for entry in folder.iterdir():
            stat = entry.stat()
            latest, total = max(latest, stat.st_mtime), total + stat.st_size
    except OSError:
        pass
    return latest, total


def _public(exc: Exception, version: Path) -> str:
    """What /readyz may say about a failed load: version and file names, never the server's paths."""
    if isinstance(exc, CorruptIndexError):
        return exc.public
    if isinstance(exc, IndexFormatError):
        return str(exc).replace(str(version), version.name).replace(str(version.parent) + "/", "")
    return f"{version.name}: cannot be loaded ({type(exc).__name__}; details in the server log)"
