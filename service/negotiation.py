"""Which body a search answers with, from the request's ``Accept`` header (RFC 9110 12.5.1): the JSON
answer (the default: no header, ``*/*``, ``application/*``, ``application/json``) or the hits as a
GeoJSON FeatureCollection (``application/geo+json``). Anything else is a 406 naming both.

Quality values are honoured: a type takes the q of the most specific range naming it (so
``application/json;q=0, */*`` refuses JSON), the highest q wins, JSON on a tie; parameters other than
``q`` are ignored.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from rsir.service.chips import place_of, row_of
from rsir.service.errors import ApiError
from rsir.service.geojson import MEDIA_TYPE, feature_collection
from rsir.service.schemas import ErrorResponse, SearchResponse
from rsir.service.serving_index import ServingIndex

JSON = "application/json"
GEOJSON = MEDIA_TYPE
SUPPORTED = (JSON, GEOJSON)
# The members of the JSON answer that a FeatureCollection keeps, as foreign members (RFC 7946 6.1).
_MEMBERS = ("target", "index_version", "cache", "timings_ms", "request_id", "explain_note")

# OpenAPI: the GeoJSON alternative of a search's 200, and the 406.
GEOJSON_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            GEOJSON: {
                "schema": {
                    "type": "object",
                    "description": "Accept: application/geo+json: the hits as an RFC 7946 "
                    "FeatureCollection (footprints; rank, score, scene, datetime and image URLs in "
                    "properties; overlapping chips of one scene merged, the others under 'merged')",
                }
            }
        }
    },
    406: {"model": ErrorResponse, "description": f"Accept names none of {', '.join(SUPPORTED)}"},
}


def chosen_media(accept: str | None) -> str | None:
    """The media type to answer ``accept`` with, or ``None`` when it accepts neither."""
    if accept is None or not accept.strip():
        return JSON
    # per offered type, the quality of the most specific range naming it (exact > application/* > */*)
    found: dict[str, tuple[int, float]] = {}
    for part in accept.split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        for offered in SUPPORTED:
            specificity = {offered: 2, "application/*": 1, "*/*": 0}.get(media)
            if specificity is not None and specificity >= found.get(offered, (-1, 0.0))[0]:
                found[offered] = (specificity, _quality(params))
    best = max(SUPPORTED, key=lambda offered: found.get(offered, (0, 0.0))[1])  # a tie: JSON, listed first
    return best if found.get(best, (0, 0.0))[1] > 0 else None


async def negotiate(request: Request) -> None:
    """Dependency of the search routes: a 406 before any work when the answer would not be accepted."""
    accept = request.headers.get("accept")
    media = chosen_media(accept)
    if media is None:
        supported = ", ".join(SUPPORTED)
        message = f"Accept {accept!r} names none of the supported types: {supported}"
        raise ApiError(406, "not_acceptable", message)
    request.state.media_type = media


def wants_geojson(request: Request) -> bool:
    return getattr(request.state, "media_type", JSON) == GEOJSON


def geojson_body(index: ServingIndex, response: SearchResponse) -> str:
    """The search's response model (URLs already signed) as a FeatureCollection of its hits."""
    body = response.model_dump(mode="json")
    hits = body["results"]
    places = [place_of(_metadata(index, hit)) for hit in hits]
    members = {name: body[name] for name in _MEMBERS if body.get(name) is not None}
    return json.dumps(feature_collection(hits, places, members=members))


def _metadata(index: ServingIndex, hit: dict[str, Any]) -> dict[str, Any]:
    if isinstance(hit.get("metadata"), dict):
        return dict(hit["metadata"])
    return row_of(index, str(hit.get("image_id")))  # a caption hit: its image's metadata


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(1.0, max(0.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0
