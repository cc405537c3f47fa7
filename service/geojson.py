"""Search hits as a GeoJSON FeatureCollection (RFC 7946), the answer to ``Accept: application/geo+json``.

Pure: JSON hits and their places in, a JSON-ready dict out. The rules RFC 7946 sets, which QGIS and
Leaflet rely on:

- coordinates ``[lon, lat]`` in WGS84, rounded to 7 decimals (~1 cm; section 11.2 asks for no more);
- polygon exterior rings counter-clockwise, holes clockwise (section 3.1.6), every ring closed;
- a geometry crossing the antimeridian is cut in two there, a MultiPolygon (section 3.1.9);
- ``bbox`` ``[west, south, east, north]``, with west > east when the box crosses the antimeridian
  (section 5.2), per feature and for the whole collection;
- a hit without a footprint is a Feature with ``"geometry": null`` (section 3.2), not left out.

Properties are flat where they can be (QGIS shows nested values as text): the hit's ``id``,
``rank``, scores, URLs, ``scene``, ``datetime`` and its metadata, and ``merged`` listing the hits
folded into it (:mod:`rsir.service.chip_merge`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from rsir.service.antimeridian import bbox, split, union_bbox, unwrap
from rsir.service.chip_merge import Place, merge_overlapping

MEDIA_TYPE = "application/geo+json"
DECIMALS = 7
# Hit fields that become Feature properties as they are (the rest of a hit is its metadata or explain).
_HIT_FIELDS = ("id", "rank", "score", "coarse_score", "fine_score", "image_url", "thumbnail_url")
# Metadata that the Feature says another way (its geometry) or that must not shadow a hit field.
_DROPPED_METADATA = frozenset({"bbox", "footprint", *_HIT_FIELDS})


def geometry_and_bbox(
    geometry: BaseGeometry | Mapping[str, Any] | None,
) -> tuple[dict[str, Any] | None, list[float] | None]:
    """A WGS84 footprint (shapely, or a GeoJSON geometry dict) -> its RFC 7946 geometry and bbox;
    ``(None, None)`` for no footprint."""
    if geometry is None:
        return None, None
    geom = shape(geometry) if isinstance(geometry, Mapping) else geometry
    if geom.is_empty:
        return None, None
    geom = unwrap(geom)
    out = shapely.transform(_oriented(split(geom)), lambda xy: np.round(xy, DECIMALS))
    return json.loads(shapely.to_geojson(out)), _rounded(bbox(geom))


def feature_collection(
    hits: Sequence[Mapping[str, Any]],
    places: Sequence[Place],
    *,
    merge_iou: float | None = None,
    members: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Hits in rank order (the JSON answer's ``results``) and each one's :class:`Place` -> a
    FeatureCollection, one Feature per hit kept.

    Overlapping chips of one scene are merged (:func:`rsir.service.chip_merge.merge_overlapping`): the
    best-ranked keeps its Feature and lists the others under ``merged`` (``id``, ``rank``, ``score``).
    ``merge_iou=None`` takes that module's default threshold; a negative one merges nothing.
    ``members`` are added to the collection as foreign members (e.g. ``index_version``).
    """
    if len(hits) != len(places):
        raise ValueError(f"{len(hits)} hits but {len(places)} places")
    features, boxes = [], []
    for kept, others in merge_overlapping(places, merge_iou):
        geometry, box = geometry_and_bbox(places[kept].footprint)
        feature: dict[str, Any] = {
            "type": "Feature",
            "id": _hit_id(hits[kept]),
            "geometry": geometry,
            "properties": _properties(hits[kept], places[kept], [hits[i] for i in others]),
        }
        if box is not None:
            feature["bbox"] = box
            boxes.append(box)
        features.append(feature)
    out: dict[str, Any] = {"type": "FeatureCollection", **(members or {}), "features": features}
    if boxes:
        out["bbox"] = union_bbox(boxes)
    return out


def _oriented(geometry: BaseGeometry) -> BaseGeometry:
    if isinstance(geometry, Polygon):
        return orient(geometry, sign=1.0)  # exterior counter-clockwise, holes clockwise
    if isinstance(geometry, MultiPolygon):
        return MultiPolygon([orient(p, sign=1.0) for p in geometry.geoms])
    return geometry


def _rounded(values: list[float]) -> list[float]:
    return [round(v, DECIMALS) for v in values]


def _hit_id(hit: Mapping[str, Any]) -> str:
    return str(hit["id"] if "id" in hit else hit["image_id"])


def _properties(hit: Mapping[str, Any], place: Place, others: list[Mapping[str, Any]]) -> dict[str, Any]:
    metadata = hit.get("metadata") or {}
    props: dict[str, Any] = {name: hit[name] for name in _HIT_FIELDS if name in hit}
    if "caption" in hit:  # an image-to-caption hit: the caption, drawn on its image's footprint
        props.update(id=_hit_id(hit), caption=hit["caption"])
    props["scene"] = place.scene
    props["datetime"] = metadata.get("datetime") or metadata.get("time")
    for name, value in metadata.items():
        if name not in _DROPPED_METADATA and name not in props:
            props[name] = value
    props["merged"] = [{"id": _hit_id(o), "rank": o.get("rank"), "score": o.get("score")} for o in others]
    return props
