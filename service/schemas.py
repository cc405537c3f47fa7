"""Request and response bodies of the HTTP API (pydantic: validated, and described in OpenAPI).

Bounds that depend on settings (``k``, ``recall_k``, query length) are checked by the routes against
the one ``Settings`` object, so the limits live in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rsir.search.options import Recall, Rerank, Sar, Target
from rsir.service.text import lone_surrogate


class Strict(BaseModel):
    # Unknown fields are errors: a misspelt "recal_k" must not be ignored silently.
    model_config = ConfigDict(extra="forbid")


class NumberRange(Strict):
    """Bounds on a numeric property (the STAC API query extension's operators); at least one."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


class SearchFilters(Strict):
    """Pre-filters applied inside recall: only matching images are candidates."""

    bbox: tuple[float, float, float, float] | None = Field(
        None,
        description="footprint intersects [west, south, east, north] (degrees; west > east crosses "
        "the antimeridian)",
    )
    intersects: dict[str, Any] | None = Field(
        None, description="footprint intersects this GeoJSON geometry ([lon, lat], WGS84)"
    )
    ranges: dict[str, NumberRange] | None = Field(
        None, description='numeric properties within bounds, e.g. {"eo:cloud_cover": {"lte": 20}}'
    )
    scene: list[str] | None = Field(None, description="chips of any of these scenes", min_length=1)
    time_from: datetime | None = Field(None, description="acquired at or after (ISO 8601)")
    time_to: datetime | None = Field(None, description="acquired at or before (ISO 8601)")
    sensor: list[str] | None = Field(None, description="any of these sensors", min_length=1)
    tags: list[str] | None = Field(None, description="all of these tags", min_length=1)

    @field_validator("sensor", "tags", "scene")
    @classmethod
    def _unicode(cls, values: list[str] | None) -> list[str] | None:
        for value in values or ():
            if lone_surrogate(value) is not None:
                raise ValueError("contains a lone UTF-16 surrogate, which is not valid Unicode text")
        return values

    @field_validator("time_from", "time_to")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a timezone (e.g. 2023-05-01T00:00:00Z)")
        return value


class _SearchBase(Strict):
    k: int | None = Field(None, description="results to return (default: server setting)")
    recall_k: int | None = Field(None, description="candidates recalled for the rerank")
    filters: SearchFilters | None = None


class _Methods(Strict):
    """Per-request choice of the published methods; absent fields take the server's defaults."""

    recall: Recall | None = Field(
        None, description="dense (FAISS), hash (CFITR Hamming codes) or sgpd (sparse-guided partial dense)"
    )
    ppsr: bool | None = Field(None, description="PPSR (CSLS) hubness correction of the recall scores")
    sar: Sar | None = Field(None, description="SAR: re-sort the candidates by their reverse-retrieval rank")


class TextSearchRequest(_SearchBase, _Methods):
    query: str = Field(..., description="what to look for, in words")
    rerank: Rerank | None = Field(
        None,
        description="ftf (the FTF block), local (iEBAKER's local score) or none (default: server's); "
        "exhaustive only where the server allows it",
    )
    explain: bool = Field(False, description="return each result's per-word attention over its patches")


class ImageSearchOptions(_SearchBase, _Methods):
    """The options of ``POST /search/image`` (multipart form fields, beside the file)."""

    target: Target = "images"
    rerank: Rerank | None = Field(
        None, description="default: none for images (coarse only), the server's default for captions"
    )
    distinct: bool = Field(
        False,
        description="captions only: each caption text once, at its best-ranked copy (archives repeat "
        "captions across images)",
    )

    @model_validator(mode="after")
    def _rerank_fits_target(self) -> ImageSearchOptions:
        if self.target == "images" and self.rerank not in (None, "none"):
            raise ValueError(
                "image-to-image search is coarse only: use rerank 'none' (FTF scores text-image pairs)"
            )
        return self


class ImageSearchRequest(ImageSearchOptions):
    """The JSON form of ``POST /search/image``."""

    image_base64: str = Field(..., description="the image file's bytes, base64")


class Explanation(BaseModel):
    words: list[str] = Field(description="the query's word pieces, one map each")
    grid: tuple[int, int] = Field(description="patch grid (rows, columns)")
    maps: list[list[list[float]]] = Field(description="per word, softmax attention over the patch grid")
    overlay_urls: list[str] = Field(description="per word, a PNG of the map over the image")


class ImageHit(BaseModel):
    rank: int
    id: str
    score: float
    coarse_score: float
    fine_score: float | None
    metadata: dict[str, Any]
    image_url: str
    thumbnail_url: str
    explain: Explanation | None = None


class CaptionHit(BaseModel):
    rank: int
    caption: str
    image_id: str
    score: float
    coarse_score: float
    fine_score: float | None
    thumbnail_url: str


class SearchResults(BaseModel):
    """What every caller of the same search gets: the part of a response the result cache holds."""

    # Tried in order, each list given up at its first misfit: the cached body of every hit is
    # validated, and a caption list must not first be validated in full as image hits.
    results: (
        Annotated[list[ImageHit], Field(fail_fast=True)] | Annotated[list[CaptionHit], Field(fail_fast=True)]
    ) = Field(union_mode="left_to_right")
    target: Target
    index_version: str
    explain_note: str | None = Field(
        None,
        description="why results carry no explanation although explain was asked for (absent otherwise)",
        exclude_if=lambda note: note is None,
    )


class SearchResponse(SearchResults):
    """A search's answer: the shared results and this request's own fields."""

    cache: Literal["hit", "miss", "off"]
    timings_ms: dict[str, float]
    request_id: str


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ServedIndex(BaseModel):
    """The index version being served (names and counts, never paths)."""

    version: str
    images: int
    captions: int
    created_unix: int | float = Field(description="when the version was built (Unix seconds)")
    token_codec: str


class VersionResponse(BaseModel):
    rsir: str = Field(description="the server's rsir version")
    model: dict[str, Any] = Field(description="the encoder: architecture, checkpoint hash, dims (no paths)")
    index: ServedIndex
