"""``POST /search/text`` and ``POST /search/image``: validate, look in the cache, batch through the
engine, shape the response. The search itself is the engine's; nothing here scores anything."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from rsir.model.images import decode_image
from rsir.search.engine import Plan, QueryOptions, SearchResult
from rsir.search.filters import Filters
from rsir.search.options import RECALLS, RERANKS, SARS, TARGETS, Target
from rsir.service.batcher import MicroBatcher
from rsir.service.cache import cache_key, normalise_query
from rsir.service.errors import ApiError, validation_message
from rsir.service.negotiation import GEOJSON, GEOJSON_RESPONSES, geojson_body, negotiate, wants_geojson
from rsir.service.routes.admission import admitted, authenticate
from rsir.service.routes.images import on_image_thread
from rsir.service.runtime import Runtime, runtime
from rsir.service.schemas import (
    CaptionHit,
    ErrorResponse,
    Explanation,
    ImageHit,
    ImageSearchOptions,
    ImageSearchRequest,
    SearchFilters,
    SearchResponse,
    SearchResults,
    TextSearchRequest,
)
from rsir.service.serving_index import ServingIndex
from rsir.service.signing import sign_results
from rsir.service.text import query_problem

log = structlog.get_logger(__name__)
_LARGE_BODY = 64 * 1024  # cached bodies parsed off the event loop from this size (explain answers)
router = APIRouter(tags=["search"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 408, 413, 415, 422, 429)
}


def json_body(request: Request) -> None:
    """415 for a body that says it is not JSON (FastAPI would try it as a dict and answer 422)."""
    given = request.headers.get("content-type")
    if given is None:
        return  # read as JSON, as FastAPI does
    media = given.split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the search as application/json; got content type {media or 'none'!r}",
        )


@router.post(
    "/search/text",
    response_model=SearchResponse,
    responses=_ERRORS | GEOJSON_RESPONSES,
    dependencies=[Depends(negotiate), Depends(json_body), Depends(authenticate)],
)
async def search_text(body: TextSearchRequest, request: Request) -> SearchResponse | Response:
    """Images matching a text query: coarse recall, then the FTF rerank of the top candidates."""
    rt = runtime(request)
    started = time.perf_counter()
    problem = query_problem(body.query, rt.settings.max_query_chars)
    if problem is not None:
        raise ApiError(422, "invalid_request", problem)
    index = rt.holder.current
    plan = _plan(rt, index, body, "images", image_query=False, explain=body.explain, distinct=False)
    key = _key(rt, index, {"query": normalise_query(body.query)}, plan, body.filters)
    return await _search(request, started, key, rt.text_batcher, (index, body.query, plan), body.query)


@router.post(
    "/search/image",
    response_model=SearchResponse,
    responses=_ERRORS | GEOJSON_RESPONSES,
    dependencies=[Depends(negotiate), Depends(authenticate)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "k": {"type": "integer"},
                            "recall_k": {"type": "integer"},
                            "target": {"type": "string", "enum": list(TARGETS)},
                            "rerank": {"type": "string", "enum": list(RERANKS)},
                            "recall": {"type": "string", "enum": list(RECALLS)},
                            "ppsr": {"type": "boolean"},
                            "sar": {"type": "string", "enum": list(SARS)},
                            "distinct": {"type": "boolean"},
                            "filters": {"type": "string", "description": "SearchFilters as JSON"},
                        },
                    }
                },
                "application/json": {"schema": {"$ref": "#/components/schemas/ImageSearchRequest"}},
            },
        }
    },
)
async def search_image(request: Request) -> SearchResponse | Response:
    """Query by example: an uploaded image searched over the images (``target=images``, coarse
    order) or over the indexed captions (``target=captions``, reranked by the FTF block).

    The whole body is read (bounded in size and time by the middleware) before the request is
    admitted: a slow upload must not hold a slot of model work while it dribbles in."""
    rt = runtime(request)
    started = time.perf_counter()
    body, data = await _read_image_request(request)
    index = rt.holder.current
    plan = _plan(rt, index, body, body.target, image_query=True, explain=False, distinct=body.distinct)
    key = _key(rt, index, {"image_sha256": hashlib.sha256(data).hexdigest()}, plan, body.filters)
    image = await _decode_upload(rt, data)
    return await _search(request, started, key, rt.image_batcher, (index, image, plan), None)


# -- request handling --------------------------------------------------------------------------------
async def _read_image_request(request: Request) -> tuple[ImageSearchOptions, bytes]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except StarletteHTTPException as exc:
            # Starlette's answer to a body its multipart parser cannot read (no boundary, a part
            # without a name, too many files or fields): its reason, in the API's error body.
            if exc.status_code != 400:
                raise  # over the size or time limit: the middleware's own answer
            given = request.headers.get("content-type", "").partition("boundary=")[2]
            declared = given.split(";")[0].strip().strip('"')[:70] or None  # RFC 2046: 70 characters at most
            raise ApiError(
                400,
                "invalid_multipart",
                f"the multipart body cannot be read: {exc.detail} (the content type declares "
                f"boundary {declared!r})",
            ) from exc
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            # Also what a body cut short inside the file part reads as: the parser keeps no half part.
            raise ApiError(
                422,
                "invalid_request",
                "file: a multipart file field named 'file' holding the image is required; none arrived "
                "complete",
            )
        fields: dict[str, Any] = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        if "filters" in fields:
            try:
                fields["filters"] = json.loads(fields["filters"])
            except json.JSONDecodeError as exc:
                raise ApiError(400, "invalid_json", f"filters: not valid JSON ({exc})") from exc
            except RecursionError:
                raise ApiError(400, "invalid_json", "filters: not valid JSON (nested too deeply)") from None
        options = _validate(ImageSearchOptions, fields)
        data = await upload.read()
        return options, data
    if content_type == "application/json":
        try:
            parsed = ImageSearchRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            status, code, message = validation_message(list(exc.errors()))
            raise ApiError(status, code, message) from exc
        try:
            data = base64.b64decode(parsed.image_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(422, "invalid_request", f"image_base64: not valid base64 ({exc})") from exc
        return parsed, data
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send the image as multipart/form-data (field 'file') or as application/json with image_base64; "
        f"got content type {content_type or 'none'!r}",
    )


async def _decode_upload(rt: Runtime, data: bytes) -> Any:
    """Decoded before admission (a corrupt upload is the caller's 4xx and costs no quota), on the
    image threads and within their bound, so a flood of uploads cannot queue without limit."""
    return await on_image_thread(rt, lambda: decode_image(data, rt.settings.max_image_pixels))


def _validate(model: type[ImageSearchOptions], fields: dict[str, Any]) -> ImageSearchOptions:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        status, code, message = validation_message(list(exc.errors()))
        raise ApiError(status, code, message) from exc


def _plan(
    rt: Runtime,
    index: ServingIndex,
    asked: TextSearchRequest | ImageSearchOptions,
    target: Target,
    *,
    image_query: bool,
    explain: bool,
    distinct: bool,
) -> Plan:
    """The engine's plan for a text or an image query: the server's defaults fill what the request
    leaves out, and the engine checks the options against its bounds (the server's, through
    ``rsir.service.app.engine_config``) once, here: a 422 now, not from inside a batch.

    The FTF block, PPSR and SAR score text-image pairs: an image query over images (no text on
    either side) defaults to none of them, every other query to the server's defaults."""
    s = rt.settings
    k = s.default_k if asked.k is None else asked.k
    recall_k = max(s.default_recall_k, k) if asked.recall_k is None else asked.recall_k
    cross = not image_query or target == "captions"
    recall = asked.recall or s.default_recall
    if asked.ppsr is not None:
        ppsr = asked.ppsr
    elif s.default_ppsr is not None:
        ppsr = cross and s.default_ppsr
    else:  # on where the version holds PPSR's data for this side and recall method
        ppsr = cross and index.ppsr_available(recall, target)
    options = QueryOptions(
        k,
        recall_k,
        asked.rerank or (s.default_rerank if cross else "none"),
        explain,
        _filters(asked.filters),
        target,
        recall=recall,
        ppsr=ppsr,
        sar=asked.sar or (s.default_sar if cross else "off"),
        distinct=distinct,
    )
    return index.plan(options, "image" if image_query else "text")


def _filters(asked: SearchFilters | None) -> Filters | None:
    if asked is None:
        return None
    return Filters(
        bbox=asked.bbox,
        time_from=int(asked.time_from.timestamp()) if asked.time_from else None,
        time_to=int(asked.time_to.timestamp()) if asked.time_to else None,
        sensors=tuple(asked.sensor) if asked.sensor else None,
        tags=tuple(asked.tags) if asked.tags else None,
        intersects=asked.intersects,
        ranges={k: v.model_dump(exclude_none=True) for k, v in asked.ranges.items()}
        if asked.ranges is not None
        else None,
        scenes=tuple(asked.scene) if asked.scene else None,
    )


def _key(
    rt: Runtime, index: ServingIndex, query: dict[str, str], plan: Plan, filters: SearchFilters | None
) -> str:
    """The result cache's key: the model, the engine's scoring, the version and everything in the
    request that changes the answer (``query``: the normalised text or the image's hash)."""
    o = plan.options
    normal = {
        **query,
        "k": o.k,
        "recall_k": o.recall_k,
        "explain": o.explain,
        "target": o.target,
        "distinct": o.distinct,
        "filters": filters.model_dump(mode="json") if filters else None,
        "rerank": o.rerank,
        "recall": o.recall,
        "ppsr": o.ppsr,
        "sar": o.sar,
    }
    route = "image" if plan.image_query else "text"
    return cache_key(f"{rt.model_id}|{index.scoring_id}", index.version, route, normal)


# -- answering ---------------------------------------------------------------------------------------
async def _search(
    request: Request,
    started: float,
    key: str,
    batcher: MicroBatcher[Any, SearchResult],
    job: tuple[ServingIndex, Any, Plan],
    text: str | None,
) -> SearchResponse | Response:
    """The cached answer, else the engine's (through the batcher), shaped, cached and sent."""
    rt = runtime(request)
    index, _, plan = job
    async with admitted(request):
        cached = await _cached(rt, key, request, started)
        if cached is not None:
            return await _in_media(request, index, cached)
        result, stats = await batcher.submit(job)
    rt.metrics.stage_seconds.labels("queue").observe(stats.queue_ms / 1000)
    for stage, ms in result.timings_ms.items():
        rt.metrics.stage_seconds.labels(stage).observe(ms / 1000)
    shape = partial(_results, rt, index, result, plan.options, text)
    # An explain answer holds thousands of floats to check and serialise (ms each): off the event loop.
    shared, body = await asyncio.to_thread(shape) if plan.options.explain else shape()
    await rt.cache.set(key, body)
    timings = {"queue": round(stats.queue_ms, 3), **{k: round(v, 3) for k, v in result.timings_ms.items()}}
    timings["total"] = _ms(started)
    return await _in_media(
        request, index, _response(rt, request, shared, "miss" if rt.cache.enabled else "off", timings)
    )


async def _cached(rt: Runtime, key: str, request: Request, started: float) -> SearchResponse | None:
    t0 = time.perf_counter()
    raw = await rt.cache.get(key)
    rt.metrics.stage_seconds.labels("cache").observe(time.perf_counter() - t0)
    if raw is None:
        return None
    try:
        if len(raw) > _LARGE_BODY:
            shared = await asyncio.to_thread(SearchResults.model_validate_json, raw)
        else:
            shared = SearchResults.model_validate_json(raw)
    except ValidationError as exc:
        # Not a body this release writes (an older one sharing the Redis, a damaged entry): answered
        # afresh, and the fresh answer replaces it.
        rt.metrics.cache.labels("unreadable").inc()
        log.warning("cache_entry_unreadable", key=key, error=str(exc.errors()[:1]))
        return None
    return _response(rt, request, shared, "hit", {"cache": _ms(t0), "total": _ms(started)})


def _response(
    rt: Runtime,
    request: Request,
    shared: SearchResults,
    cache: Literal["hit", "miss", "off"],
    timings: dict[str, float],
) -> SearchResponse:
    """The response, with image URLs signed for the caller's key when keys guard the archive."""
    results = shared.results
    identity = getattr(request.state, "identity", None)
    if rt.access.api_keys and identity is not None and identity.name.startswith("key:"):
        results = sign_results(results, rt.signer, identity.name.removeprefix("key:"))
    return SearchResponse(
        results=results,
        target=shared.target,
        index_version=shared.index_version,
        explain_note=shared.explain_note,
        cache=cache,
        timings_ms=timings,
        request_id=request.state.request_id,
    )


async def _in_media(
    request: Request, index: ServingIndex, response: SearchResponse
) -> SearchResponse | Response:
    """The answer in the media type the request accepts (:mod:`rsir.service.negotiation`): the response
    model as JSON, or the same model's hits as a GeoJSON FeatureCollection (built off the event loop:
    footprints are reprojected, split and merged per hit)."""
    if wants_geojson(request):
        return Response(await asyncio.to_thread(geojson_body, index, response), media_type=GEOJSON)
    return response


# -- response shaping --------------------------------------------------------------------------------
def image_url(image_id: str) -> str:
    return f"/images/{quote(image_id)}"


def _results(
    rt: Runtime, index: ServingIndex, result: SearchResult, o: QueryOptions, text: str | None
) -> tuple[SearchResults, bytes]:
    """The engine's answer as the response model, and the bytes the result cache keeps of it."""
    hits: list[ImageHit] | list[CaptionHit]
    if o.target == "captions":
        hits = _caption_hits(index, result)
    else:
        words = rt.encoder.word_pieces(text) if o.explain and text is not None else []
        hits = _image_hits(index, result, o.k, text, words)
    note = None
    if o.explain and result.attention is None:
        note = (
            f"no explanation with rerank {o.rerank!r}: the maps are the FTF block's attention of "
            "each query word over the image's patches; ask for rerank 'ftf'"
        )
    shared = SearchResults(results=hits, target=o.target, index_version=index.version, explain_note=note)
    return shared, shared.model_dump_json().encode()


def _image_hits(
    index: ServingIndex, result: SearchResult, k: int, query: str | None, words: list[str]
) -> list[ImageHit]:
    hits = []
    for rank, hit in enumerate(result.hits[:k], 1):
        explain = None
        if result.attention is not None and query is not None:
            maps = np.round(result.attention[rank - 1], 4)
            explain = Explanation(
                words=words[: maps.shape[0]],
                grid=index.grid,
                maps=maps.tolist(),
                overlay_urls=[
                    f"{image_url(hit.id)}/explain.png?query={quote(query)}&word={w}"
                    for w in range(maps.shape[0])
                ],
            )
        hits.append(
            ImageHit(
                rank=rank,
                id=hit.id,
                score=hit.score,
                coarse_score=hit.coarse,
                fine_score=hit.fine,
                metadata=index.metadata(hit.index),
                image_url=image_url(hit.id),
                thumbnail_url=f"{image_url(hit.id)}/thumbnail",
                explain=explain,
            )
        )
    return hits


def _caption_hits(index: ServingIndex, result: SearchResult) -> list[CaptionHit]:
    hits = []
    for rank, hit in enumerate(result.hits, 1):
        image_id = index.caption_image(hit.index)
        hits.append(
            CaptionHit(
                rank=rank,
                caption=hit.id,
                image_id=image_id,
                score=hit.score,
                coarse_score=hit.coarse,
                fine_score=hit.fine,
                thumbnail_url=f"{image_url(image_id)}/thumbnail",
            )
        )
    return hits


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)
