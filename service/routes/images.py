"""``GET /images/{id}`` (the original bytes), ``/thumbnail`` and ``/explain.png`` (the FTF block's
attention for one query word, drawn over the tile).

Reading, decoding, drawing and encoding all run on the runtime's image threads, at most
``image_workers + image_queue`` at once (more get 429): the event loop only awaits them, so
``/healthz`` stays fast under any image load. Errors name ids, never where the archive lives. An
original that changed since indexing, vanished or no longer decodes is the server's fault, not the
request's: a 500 with its own code (counted in ``rsir_errors_total``), path and OS error in the log.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from numpy.typing import NDArray
from PIL import Image

from rsir.index.originals import Original, OriginalChangedError, OriginalUnavailableError, read_original
from rsir.index.scenes import read_window
from rsir.model.errors import DatasetError, InvalidInputError
from rsir.model.images import decode_image
from rsir.service.chips import ChipRef, chip_of, window_of
from rsir.service.errors import ApiError
from rsir.service.overlay import overlay, to_jpeg, to_png
from rsir.service.routes.admission import admitted, image_access
from rsir.service.runtime import Runtime, runtime
from rsir.service.schemas import ErrorResponse
from rsir.service.serving_index import ServingIndex
from rsir.service.text import query_problem

log = structlog.get_logger(__name__)
router = APIRouter(tags=["images"], dependencies=[Depends(image_access)])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 429, 500)
}
MAX_CHIP_SIDE = 2048  # a chip's "original" PNG (a chip resampled with --gsd may span more source pixels)
_IMMUTABLE = "public, max-age=86400"  # an id's bytes never change within an index version
_TOKEN = Query(None, alias="t", description="signed-URL token from a search result (with API keys on)")
T = TypeVar("T")


@router.get("/images/{image_id:path}/thumbnail", responses=_ERRORS, response_class=Response)
async def thumbnail(
    image_id: str,
    request: Request,
    size: Annotated[int | None, Query(ge=16, le=1024)] = None,
    t: str | None = _TOKEN,
) -> Response:
    """A JPEG of the image scaled to fit ``size`` pixels (default: the server's thumbnail size)."""
    rt = runtime(request)
    index = rt.holder.current
    side = size or rt.settings.thumbnail_px
    key = ("thumb", index.version, image_id, side)
    data = rt.images.get(key)
    if data is None:
        original = _Original.of(rt, index, image_id)
        data = await on_image_thread(rt, lambda: _thumbnail(original.decoded(side), side))
        rt.images.put(key, data)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": _cache_control(t)})


@router.get("/images/{image_id:path}/explain.png", responses=_ERRORS, response_class=Response)
async def explain_overlay(
    image_id: str,
    request: Request,
    query: Annotated[str, Query(min_length=1, description="the text query")],
    word: Annotated[int, Query(ge=0, description="index of the word piece (see explain.words)")] = 0,
    size: Annotated[int, Query(ge=32, le=1024)] = 256,
    t: str | None = _TOKEN,
) -> Response:
    """The attention of one query word over the image's patches, as a heatmap PNG. It runs the model
    on caller-chosen text, so it spends quota and a slot of work like a search."""
    rt = runtime(request)
    problem = query_problem(query, rt.settings.max_query_chars)
    if problem is not None:
        raise ApiError(422, "invalid_request", problem)
    index = rt.holder.current
    position = _position(index, image_id)
    key = ("explain", index.version, image_id, query, word, size)
    data = rt.images.get(key)
    if data is None:
        async with admitted(request):
            loop = asyncio.get_running_loop()
            maps = await loop.run_in_executor(rt.model_executor, index.explain, query, position)
        if word >= maps.shape[0]:
            raise ApiError(
                422, "invalid_request", f"word: the query has {maps.shape[0]} word pieces, got {word}"
            )
        original = _Original.of(rt, index, image_id)
        data = await on_image_thread(rt, lambda: _overlay(original.decoded(), maps[word], size))
        rt.images.put(key, data)
    return Response(data, media_type="image/png", headers={"Cache-Control": _cache_control(t)})


@router.get("/images/{image_id:path}", responses=_ERRORS, response_class=Response)
async def original(image_id: str, request: Request, t: str | None = _TOKEN) -> Response:
    """The image's original bytes, as indexed."""
    rt = runtime(request)
    source = _Original.of(rt, rt.holder.current, image_id)
    data = await on_image_thread(rt, source.read)
    media = source.media_type or mimetypes.guess_type(image_id)[0] or "application/octet-stream"
    return Response(data, media_type=media, headers={"Cache-Control": _cache_control(t)})


def _cache_control(token: str | None) -> str:
    # A signed URL is one key's, for a while: shared caches must not hand it to others.
    return _IMMUTABLE.replace("public", "private") if token is not None else _IMMUTABLE


def _position(index: ServingIndex, image_id: str) -> int:
    position = index.live_position(image_id)
    if position is None:
        raise ApiError(404, "not_found", f"no image {image_id!r} in index version {index.version}")
    return position


class _Original:
    """Where one live image's original lies and how to read it, resolved on the event loop (a 404
    for an unknown id) and read or decoded on an image thread. A chip of a scene is a
    :class:`_ChipOriginal`: its window read from the scene."""

    media_type: str | None = None  # None: guessed from the id

    def __init__(
        self, image_id: str, version: str, locate: Callable[[], Path], entry: Original, max_pixels: int
    ):
        self.image_id, self.version, self.locate, self.entry = image_id, version, locate, entry
        self.max_pixels = max_pixels

    @classmethod
    def of(cls, rt: Runtime, index: ServingIndex, image_id: str) -> _Original:
        position = _position(index, image_id)
        chip = chip_of(index, position, image_id, rt.settings.archive_root)
        if chip is not None:
            return _ChipOriginal(chip, index.version)
        if window_of(index.metadata(position)) is not None:  # a chip whose scene's reading is not recorded
            raise ApiError(
                404,
                "not_found",
                f"index version {index.version} does not record how the scene of {image_id!r} was read "
                "(no scenes.json entry); index the scenes again",
            )
        entry = index.sources.get(image_id)
        if entry is None:
            raise ApiError(
                404, "not_found", f"index version {index.version} does not record where {image_id!r} is"
            )
        root = rt.settings.archive_root
        return cls(
            image_id, index.version, lambda: index.sources.locate(entry, root), entry, _pixel_limit(rt, index)
        )

    def read(self) -> bytes:
        """The original's bytes, exactly as indexed."""
        with served_original(self.image_id, self.version):
            return read_original(self.locate(), self.entry)

    def decoded(self, max_side: int | None = None) -> Image.Image:
        """The image (``max_side``: a hint that a smaller one will do)."""
        data = self.read()
        try:
            return decode_image(data, self.max_pixels)
        except InvalidInputError as exc:  # the indexed bytes, unchanged, no longer decode: not the caller's
            log.error("original_undecodable", image_id=self.image_id, version=self.version, error=str(exc))
            raise ApiError(
                500,
                "original_unavailable",
                f"the original of {self.image_id!r} cannot be decoded on the server",
            ) from exc


class _ChipOriginal(_Original):
    """A chip: its window of the scene, read when asked (no copy of the archive is kept). Its
    "original" is a PNG of the window, at most ``MAX_CHIP_SIDE`` pixels a side."""

    media_type = "image/png"

    def __init__(self, chip: ChipRef, version: str):
        self.chip, self.image_id, self.version = chip, chip.image_id, version

    def read(self) -> bytes:
        return to_png(self.decoded(MAX_CHIP_SIDE))

    def decoded(self, max_side: int | None = None) -> Image.Image:
        chip = self.chip
        _, _, width, height = chip.window
        href = chip.scene.bands[0].href
        with served_original(self.image_id, self.version):
            found = os.path.getsize(href) if chip.size else None
            if found is not None and found != chip.size:
                raise OriginalChangedError(f"{href}: {found} bytes, {chip.size} when indexed")
            side = min(max_side or MAX_CHIP_SIDE, MAX_CHIP_SIDE, max(width, height))
            return Image.fromarray(read_window(chip.scene, chip.window, side).rgb)


@contextmanager
def served_original(image_id: str, version: str) -> Iterator[None]:
    """An original that changed since indexing, vanished or no longer reads: the server's 500 with
    its own code; the path and the OS error go to the log, not to the caller."""
    try:
        yield
    except OriginalChangedError as exc:
        log.error("original_changed", image_id=image_id, version=version, error=str(exc))
        raise ApiError(
            500,
            "original_changed",
            f"the original of {image_id!r} changed since index version {version} was built; "
            "it is not served until the archive is indexed again",
        ) from exc
    except (OriginalUnavailableError, DatasetError, OSError) as exc:  # DatasetError: a scene's read
        log.error(
            "original_unavailable",
            image_id=image_id,
            version=version,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise ApiError(
            500, "original_unavailable", f"the original of {image_id!r} cannot be read on the server"
        ) from exc


def _pixel_limit(rt: Runtime, index: ServingIndex) -> int:
    """The decoding limit for originals: never below the one the version was built with, so every
    image the builder accepted also gets a thumbnail and an overlay (uploads keep their own limit)."""
    return max(index.built_max_pixels, rt.settings.max_image_pixels)


def _thumbnail(image: Image.Image, side: int) -> bytes:
    image.thumbnail((side, side))
    return to_jpeg(image)


def _overlay(image: Image.Image, attention: NDArray[np.floating], size: int) -> bytes:
    return to_png(overlay(image, attention, size))


async def on_image_thread(rt: Runtime, work: Callable[[], T]) -> T:
    """``work()`` on the image threads; 429 when as many renders as allowed are running or waiting."""
    if rt.image_slots.locked():
        rt.metrics.rejected.labels("images_busy").inc()
        raise ApiError(
            429,
            "overloaded",
            "the server is drawing as many images as it may; retry shortly",
            {"Retry-After": "1"},
        )
    async with rt.image_slots:
        rt.metrics.image_renders.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(rt.image_executor, work)
        finally:
            rt.metrics.image_renders.dec()
