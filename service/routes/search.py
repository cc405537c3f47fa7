"""``POST /search/text`` and ``POST /search/image``: validate, look in the cache, batch through the
engine, shape the response. The search itself is the engine's; nothing here scores anything."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from numpy.typing import NDArray
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from model.errors import InvalidInputError
from model.images import decode_image
from search.engine import QueryOptions, SearchResult
from search.filters import Filters, filter_mask
from search.options import RECALLS, RERANKS, SARS, TARGETS
from service.cache import cache_key, normalise_query
from service.errors import ApiError, validation_message
from service.negotiation import GEOJSON, GEOJSON_RESPONSES, geojson_body, negotiate, wants_geojson
from service.routes.admission import admitted, authenticate
from service.routes.images import on_image_thread
from service.runtime import Runtime, runtime
from service.schemas import (
    ErrorResponse,
    ImageSearchOptions,
    ImageSearchRequest,
    SearchFilters,
    SearchResponse,
    TextSearchRequest,
)
from service.serving_index import ServingIndex
from service.signing import sign_results
from service.text import query_problem

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
async def search_text(body: TextSearchRequest, request: Request) -> Response:
    """Images matching a text query: coarse recall, then the FTF rerank of the top candidates."""
    rt = runtime(request)
    started = time.perf_counter()
    query = body.query
    problem = query_problem(query, rt.settings.max_query_chars)
    if problem is not None:
        raise ApiError(422, "invalid_request", problem)
    k, recall_k = _bounds(rt, body.k, body.recall_k, body.explain)
    index = rt.holder.current
    s = rt.settings
    options = QueryOptions(
        k,
        recall_k,
        body.rerank or s.default_rerank,
        body.explain,
        _allowed(index, body.filters),
        recall=body.recall or s.default_recall,
        ppsr=_ppsr(index, s.default_ppsr, "images", body.recall or s.default_recall)
        if body.ppsr is None
        else body.ppsr,
        sar=body.sar or s.default_sar,
    )
    index.engine.check_options(options)  # a 422 now, not from inside a batch
    methods = _methods(options)
    normal = {
        "query": normalise_query(query),
        "k": k,
        "recall_k": recall_k,
        "explain": body.explain,
        "filters": body.filters.model_dump(mode="json") if body.filters else None,
        **methods,
    }
    key = cache_key(f"{rt.model_id}|{index.engine.scoring_id}", index.version, "text", normal)
    async with admitted(request):
        cached = await _cached(rt, key, request, started)
        if cached is not None:
            return cached
        result, waited = await _submit(rt, rt.text_batcher.submit((index.engine, query, options)))
    words = rt.encoder.word_pieces(query) if body.explain else []
    payload: dict[str, Any] = {
        "results": _image_hits(index, result, k, query, words),
        "target": "images",
        "index_version": index.version,
    }
    if body.explain and result.attention is None:
        payload["explain_note"] = (
            f"no explanation with rerank {options.rerank!r}: the maps are the FTF block's attention of "
            "each query word over the image's patches; ask for rerank 'ftf'"
        )
    return await _respond(rt, key, payload, result, waited, request, started)


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
async def search_image(request: Request) -> Response:
    """Query by example: an uploaded image searched over the images (``target=images``, coarse
    order) or over the indexed captions (``target=captions``, reranked by the FTF block).

    The whole body is read (bounded in size and time by the middleware) before the request is
    admitted: a slow upload must not hold a slot of model work while it dribbles in."""
    rt = runtime(request)
    started = time.perf_counter()
    options_model, data = await _read_image_request(request)
    k, recall_k = _bounds(rt, options_model.k, options_model.recall_k, False)
    index = rt.holder.current
    target = options_model.target
    s = rt.settings
    cross = target == "captions"  # PPSR and SAR correct cross-modal scores only
    options = QueryOptions(
        k,
        recall_k,
        options_model.rerank or (s.default_rerank if cross else "none"),
        False,
        _allowed(index, options_model.filters),
        target,
        image_query=True,
        recall=options_model.recall or s.default_recall,
        ppsr=(cross and _ppsr(index, s.default_ppsr, target, options_model.recall or s.default_recall))
        if options_model.ppsr is None
        else options_model.ppsr,
        sar=options_model.sar or (s.default_sar if cross else "off"),
        distinct=options_model.distinct,
    )
    index.engine.check_options(options)
    methods = _methods(options)
    normal = {
        "image_sha256": hashlib.sha256(data).hexdigest(),
        "k": k,
        "recall_k": recall_k,
        "target": target,
        "distinct": options.distinct,
        "filters": options_model.filters.model_dump(mode="json") if options_model.filters else None,
        **methods,
    }
    key = cache_key(f"{rt.model_id}|{index.engine.scoring_id}", index.version, "image", normal)
    image = await _decode_upload(rt, data)
    async with admitted(request):
        cached = await _cached(rt, key, request, started)
        if cached is not None:
            return cached
        result, waited = await _submit(rt, rt.image_batcher.submit((index.engine, image, options)))
    hits = _image_hits(index, result, k, None, []) if target == "images" else _caption_hits(index, result)
    payload = {"results": hits, "target": target, "index_version": index.version}
    return await _respond(rt, key, payload, result, waited, request, started)


# -- request handling --------------------------------------------------------------------------------
async def _read_image_request(request: Request) -> tuple[ImageSearchOptions, bytes]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(
                422, "invalid_request", "file: a multipart field named 'file' holding the image is required"
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


def _bounds(rt: Runtime, k: int | None, recall_k: int | None, explain: bool) -> tuple[int, int]:
    s = rt.settings
    k = s.default_k if k is None else k
    limit = min(s.max_k, s.max_explain_k) if explain else s.max_k
    if not 1 <= k <= limit:
        what = " with explain" if explain else ""
        raise ApiError(422, "invalid_request", f"k: must be between 1 and {limit}{what}, got {k}")
    recall_k = max(s.default_recall_k, k) if recall_k is None else recall_k
    if not k <= recall_k <= s.max_recall_k:
        raise ApiError(
            422, "invalid_request", f"recall_k: must be between k ({k}) and {s.max_recall_k}, got {recall_k}"
        )
    return k, recall_k


def _ppsr(index: ServingIndex, default: bool | None, side: str, recall: str) -> bool:
    """The server's PPSR default; ``None`` means on where the index holds PPSR's data for ``side``
    and the recall method (hash recall's correction needs its own term, over Hamming scores)."""
    if default is not None:
        return default
    return index.engine.ppsr_available(recall, side)


def _methods(o: QueryOptions) -> dict[str, object]:
    return {"rerank": o.rerank, "recall": o.recall, "ppsr": o.ppsr, "sar": o.sar}


def _allowed(index: ServingIndex, filters: SearchFilters | None) -> NDArray[np.bool_] | None:
    if filters is None:
        return None
    f = Filters(
        bbox=filters.bbox,
        time_from=int(filters.time_from.timestamp()) if filters.time_from else None,
        time_to=int(filters.time_to.timestamp()) if filters.time_to else None,
        sensors=tuple(filters.sensor) if filters.sensor else None,
        tags=tuple(filters.tags) if filters.tags else None,
    )
    return None if f.is_empty else filter_mask(index.loaded.metadata, f)


async def _submit(rt: Runtime, pending: Any) -> tuple[SearchResult, float]:
    try:
        result, stats = await pending
    except InvalidInputError:
        raise
    rt.metrics.stage_seconds.labels("queue").observe(stats.queue_ms / 1000)
    for stage, ms in result.timings_ms.items():
        rt.metrics.stage_seconds.labels(stage).observe(ms / 1000)
    return result, stats.queue_ms


async def _cached(rt: Runtime, key: str, request: Request, started: float) -> Response | None:
    t0 = time.perf_counter()
    raw = await rt.cache.get(key)
    rt.metrics.stage_seconds.labels("cache").observe(time.perf_counter() - t0)
    if raw is None:
        return None
    payload = json.loads(raw)
    payload.update(
        cache="hit",
        timings_ms={"cache": _ms(t0), "total": _ms(started)},
        request_id=request.state.request_id,
    )
    return await _send(rt, request, payload)


async def _respond(
    rt: Runtime,
    key: str,
    payload: dict[str, Any],
    result: SearchResult,
    waited_ms: float,
    request: Request,
    started: float,
) -> Response:
    await rt.cache.set(key, (await _dumps(payload)).encode())
    timings = {"queue": round(waited_ms, 3), **{k: round(v, 3) for k, v in result.timings_ms.items()}}
    timings["total"] = _ms(started)
    cache_state: Literal["miss", "off"] = "miss" if rt.cache.enabled else "off"
    body = {**payload, "cache": cache_state, "timings_ms": timings, "request_id": request.state.request_id}
    return await _send(rt, request, body)


async def _send(rt: Runtime, request: Request, body: dict[str, Any]) -> Response:
    """The JSON response, with image URLs signed for the caller's key when keys guard the archive."""
    identity = getattr(request.state, "identity", None)
    if rt.access.api_keys and identity is not None and identity.name.startswith("key:"):
        body["results"] = sign_results(body["results"], rt.signer, identity.name.removeprefix("key:"))
    if wants_geojson(request):  # Accept: application/geo+json (service/negotiation.py)
        text = await asyncio.to_thread(geojson_body, rt.holder.current, body)
        return Response(text, media_type=GEOJSON)
    return Response(await _dumps(body), media_type="application/json")


async def _dumps(body: dict[str, Any]) -> str:
    # An explain body holds thousands of floats (~10 ms to serialise): keep that off the event loop.
    if any(isinstance(hit.get("explain"), dict) for hit in body.get("results", ())):
        return await asyncio.to_thread(json.dumps, body)
    return json.dumps(body)


# -- response shaping --------------------------------------------------------------------------------
def image_url(image_id: str) -> str:
    return f"/images/{quote(image_id)}"


def _image_hits(
    index: ServingIndex, result: SearchResult, k: int, query: str | None, words: list[str]
) -> list[dict[str, Any]]:
    grid = index.loaded.gallery.grid
    hits = []
    for rank, hit in enumerate(result.hits[:k], 1):
        entry: dict[str, Any] = {
            "rank": rank,
            "id": hit.id,
            "score": hit.score,
            "coarse_score": hit.coarse,
            "fine_score": hit.fine,
            "metadata": index.loaded.metadata.row(hit.index),
            "image_url": image_url(hit.id),
            "thumbnail_url": f"{image_url(hit.id)}/thumbnail",
            "explain": None,
        }
        if result.attention is not None and query is not None:
            maps = np.round(result.attention[rank - 1], 4)
            entry["explain"] = {
                "words": words[: maps.shape[0]],
                "grid": list(grid),
                "maps": maps.tolist(),
                "overlay_urls": [
                    f"{image_url(hit.id)}/explain.png?query={quote(query)}&word={w}"
                    for w in range(maps.shape[0])
                ],
            }
        hits.append(entry)
    return hits


def _caption_hits(index: ServingIndex, result: SearchResult) -> list[dict[str, Any]]:
    store = index.loaded.gallery.captions
    assert store is not None  # the engine refuses target=captions without captions
    hits = []
    for rank, hit in enumerate(result.hits, 1):
        image_id = index.loaded.gallery.ids[int(store.image_index[hit.index])]
        hits.append(
            {
                "rank": rank,
                "caption": hit.id,
                "image_id": image_id,
                "score": hit.score,
                "coarse_score": hit.coarse,
                "fine_score": hit.fine,
                "thumbnail_url": f"{image_url(image_id)}/thumbnail",
            }
        )
    return hits


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)
