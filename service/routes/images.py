"""``GET /images/{id}`` (the original bytes), ``/thumbnail`` and ``/explain.png`` (the FTF block's
attention for one query word, drawn over the tile)."""

from __future__ import annotations

import asyncio
import mimetypes
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from PIL import Image

from model.errors import InvalidInputError
from model.images import DEFAULT_MAX_PIXELS, decode_image
from search.originals import OriginalChangedError, OriginalUnavailableError, read_original
from service.errors import ApiError
from service.overlay import overlay, to_jpeg, to_png
from service.routes.admission import admit
from service.runtime import Runtime, runtime
from service.schemas import ErrorResponse
from service.serving_index import ServingIndex

log = structlog.get_logger(__name__)
router = APIRouter(tags=["images"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 429, 500)
}
_IMMUTABLE = "public, max-age=86400"  # an id's bytes never change within an index version


@router.get("/images/{image_id:path}/thumbnail", responses=_ERRORS, response_class=Response)
async def thumbnail(
    image_id: str, request: Request, size: Annotated[int | None, Query(ge=16, le=1024)] = None
) -> Response:
    """A JPEG of the image scaled to fit ``size`` pixels (default: the server's thumbnail size)."""
    rt = runtime(request)
    index = rt.holder.current
    side = size or rt.settings.thumbnail_px
    key = ("thumb", index.version, image_id, side)
    data = rt.images.get(key)
    if data is None:
        image = await _decoded(rt, index, image_id)
        image.thumbnail((side, side))
        data = to_jpeg(image)
        rt.images.put(key, data)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": _IMMUTABLE})


# The overlay runs the model on caller-chosen text, so it passes the same gate as a search.
@router.get(
    "/images/{image_id:path}/explain.png",
    responses=_ERRORS,
    response_class=Response,
    dependencies=[Depends(admit)],
)
async def explain_overlay(
    image_id: str,
    request: Request,
    query: Annotated[str, Query(min_length=1, description="the text query")],
    word: Annotated[int, Query(ge=0, description="index of the word piece (see explain.words)")] = 0,
    size: Annotated[int, Query(ge=32, le=1024)] = 256,
) -> Response:
    """The attention of one query word over the image's patches, as a heatmap PNG."""
    rt = runtime(request)
    if not query.strip() or len(query) > rt.settings.max_query_chars:
        raise ApiError(
            422, "invalid_request", f"query: must be 1 to {rt.settings.max_query_chars} characters"
        )
    index = rt.holder.current
    position = _position(index, image_id)
    key = ("explain", index.version, image_id, query, word, size)
    data = rt.images.get(key)
    if data is None:
        loop = asyncio.get_running_loop()
        maps = await loop.run_in_executor(rt.model_executor, index.engine.explain, query, position)
        if word >= maps.shape[0]:
            raise ApiError(
                422, "invalid_request", f"word: the query has {maps.shape[0]} word pieces, got {word}"
            )
        image = await _decoded(rt, index, image_id)
        data = to_png(overlay(image, maps[word], size))
        rt.images.put(key, data)
    return Response(data, media_type="image/png", headers={"Cache-Control": _IMMUTABLE})


@router.get("/images/{image_id:path}", responses=_ERRORS, response_class=Response)
async def original(image_id: str, request: Request) -> Response:
    """The image's original bytes, as indexed."""
    rt = runtime(request)
    data = await _original_bytes(rt, rt.holder.current, image_id)
    media = mimetypes.guess_type(image_id)[0] or "application/octet-stream"
    return Response(data, media_type=media, headers={"Cache-Control": _IMMUTABLE})


def _position(index: ServingIndex, image_id: str) -> int:
    position = index.live_position(image_id)
    if position is None:
        raise ApiError(404, "not_found", f"no image {image_id!r} in index version {index.version}")
    return position


async def _original_bytes(rt: Runtime, index: ServingIndex, image_id: str) -> bytes:
    """The original's bytes, exactly as indexed. A file that changed, vanished or cannot be read is
    the server's fault, not the request's: a 500 with its own code (so ``rsir_errors_total`` counts
    it), the path and the OS error in the log only."""
    _position(index, image_id)
    entry = index.sources.get(image_id)
    if entry is None:
        raise ApiError(
            404, "not_found", f"index version {index.version} does not record where {image_id!r} is"
        )
    try:
        path = index.sources.locate(entry, rt.settings.archive_root)
        return await asyncio.to_thread(read_original, path, entry)
    except OriginalChangedError as exc:
        log.error("original_changed", image_id=image_id, version=index.version, error=str(exc))
        raise ApiError(
            500,
            "original_changed",
            f"the original of {image_id!r} changed since index version {index.version} was built; "
            "it is not served until the archive is indexed again",
        ) from exc
    except (OriginalUnavailableError, OSError) as exc:
        log.error("original_unavailable", image_id=image_id, version=index.version, error=str(exc))
        raise ApiError(
            500, "original_unavailable", f"the original of {image_id!r} cannot be read on the server"
        ) from exc


def _pixel_limit(rt: Runtime, index: ServingIndex) -> int:
    """The decoding limit for originals: never below the one the version was built with, so every
    image the builder accepted also gets a thumbnail and an overlay (uploads keep their own limit)."""
    built = index.loaded.manifest.extra.get("build_config", {}).get("max_pixels", DEFAULT_MAX_PIXELS)
    return max(int(built), rt.settings.max_image_pixels)


async def _decoded(rt: Runtime, index: ServingIndex, image_id: str) -> Image.Image:
    data = await _original_bytes(rt, index, image_id)
    try:
        return await asyncio.to_thread(decode_image, data, _pixel_limit(rt, index))
    except InvalidInputError as exc:  # the indexed bytes, unchanged, no longer decode: not the caller's
        log.error("original_undecodable", image_id=image_id, version=index.version, error=str(exc))
        raise ApiError(
            500, "original_unavailable", f"the original of {image_id!r} cannot be decoded on the server"
        ) from exc
