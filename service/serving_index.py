"""The index being served, and switching to a newly published version without dropping requests.

A request takes the current :class:`ServingIndex` once and uses it to the end, so a switch (a plain
reference swap, after the new version has loaded in a worker thread) never changes an index under a
running request; the old version's memory maps close when its last request lets go of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from rsir.index.originals import Sources, read_sources
from rsir.index.scenes import Scene, read_scenes
from rsir.index.versions import (
    CorruptIndexError,
    IndexFormatError,
    LoadedIndex,
    check_encoder,
    load_index,
    resolve_version,
)
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import RsirError
from rsir.model.images import DEFAULT_MAX_PIXELS
from rsir.search.engine import EngineConfig, Plan, QueryOptions, SearchEngine, SearchResult
from rsir.search.filters import Filters
from rsir.search.options import Modality, Recall, Target

log = structlog.get_logger(__name__)


class ServingIndex:
    """One index version as the service sees it: its engine's searches and the few facts about it a
    response needs (counts, metadata rows, captions' images, the patch grid, the recorded scenes and
    their chips).

    The one module of the service that talks to the engine and reads the loaded index's version facts
    (its manifest and folder name); it asks the engine through its public API only (issue 20), and
    routes ask here, so a change of the engine's API is answered in this file alone.
    """

    def __init__(
        self,
        loaded: LoadedIndex,
        engine: SearchEngine,
        sources: Sources,
        scenes: Mapping[str, Scene] | None = None,
    ) -> None:
        self._loaded = loaded
        self._engine = engine
        self.sources = sources
        self._scenes = dict(scenes or {})
        self._position = {image_id: i for i, image_id in enumerate(engine.image_ids)}

    @classmethod
    def serve(cls, loaded: LoadedIndex, encoder: ClipEncoder, config: EngineConfig) -> ServingIndex:
        """An opened version served with ``encoder``, which must be the model it was built with
        (:class:`IndexFormatError` naming both models otherwise)."""
        check_encoder(loaded.folder, loaded.manifest.encoder, encoder.describe())
        engine = SearchEngine.from_index(loaded, encoder, config)
        return cls(loaded, engine, read_sources(loaded.folder), read_scenes(loaded.folder))

    # -- what it is ----------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self._loaded.folder.name

    @property
    def images(self) -> int:
        """Images in the gallery, deleted ones included."""
        return self._engine.n_images

    @property
    def live_images(self) -> int:
        return self._engine.n_live_images

    @property
    def scoring_id(self) -> str:
        return self._engine.scoring_id

    def describe(self) -> dict[str, Any]:
        """The version as ``/version`` reports it (names and counts, never paths)."""
        m = self._loaded.manifest
        return {
            "version": self.version,
            "images": m.n_images,
            "captions": m.n_captions,
            "created_unix": m.created_unix,
            "token_codec": m.token_codec,
        }

    @property
    def built_max_pixels(self) -> int:
        """The largest image (in pixels) the builder of this version accepted."""
        build = self._loaded.manifest.extra.get("build_config", {})
        return int(build.get("max_pixels", DEFAULT_MAX_PIXELS))

    # -- items ---------------------------------------------------------------------------------------
    def live_position(self, image_id: str) -> int | None:
        """Gallery index of a live (not deleted) image id."""
        i = self._position.get(image_id)
        return i if i is not None and self._engine.is_live(i) else None

    def metadata(self, position: int) -> dict[str, Any]:
        """JSON-ready metadata of the image at gallery index ``position``."""
        return self._engine.metadata_row(position)

    def scene(self, scene_id: str) -> Scene | None:
        """How the build read scene ``scene_id``'s chips (band paths as recorded), if it holds that scene."""
        return self._scenes.get(scene_id)

    def scene_chips(self, scene_id: str) -> dict[str, int]:
        """``{chip id: gallery position}`` of the live chips of scene ``scene_id``, in gallery order."""
        found = self._engine.matching(Filters(scenes=(scene_id,)))
        return {self._engine.image_id(int(p)): int(p) for p in found}

    def caption_image(self, caption: int) -> str:
        """The id of the image caption number ``caption`` describes."""
        return self._engine.image_id(self._engine.caption_image(caption))

    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid (rows, columns) of the attention maps."""
        return self._engine.grid

    # -- searching -----------------------------------------------------------------------------------
    def ppsr_available(self, recall: Recall, side: Target) -> bool:
        """Whether the version holds PPSR's data for ``recall`` over ``side``."""
        return self._engine.ppsr_available(recall, side)

    def plan(self, options: QueryOptions, modality: Modality) -> Plan:
        """One query's options checked by the engine against its one set of bounds (an
        :class:`InvalidInputError` otherwise) before the query is queued: the plan runs unchecked."""
        return self._engine.validate(options, modality)

    def search(self, queries: Sequence[Any], plans: Sequence[Plan]) -> list[SearchResult]:
        """One batch of one modality (sentences or images), each with the plan :meth:`plan` made."""
        return self._engine.search(queries, plans)

    def explain(self, query: str, position: int) -> NDArray[np.float32]:
        """Each word piece's attention over the patches of the image at ``position``: ``[words, gh, gw]``."""
        return self._engine.explain(query, position)


def open_serving_index(path: Path, encoder: ClipEncoder, config: EngineConfig) -> ServingIndex:
    return ServingIndex.serve(load_index(path), encoder, config)


class IndexHolder:
    def __init__(
        self,
        root: Path,
        encoder: ClipEncoder,
        config: EngineConfig,
        on_switch: Callable[[ServingIndex], None] | None = None,
        current: ServingIndex | None = None,
    ) -> None:
        self.root = Path(root)
        self.encoder = encoder
        self.config = config
        self.on_switch = on_switch
        # ``current``: the version already opened (``rsir serve`` opens it before the server starts).
        self.current = current if current is not None else open_serving_index(self.root, encoder, config)
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
        log.info("index_switched", previous=previous, version=fresh.version, images=fresh.images)
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
