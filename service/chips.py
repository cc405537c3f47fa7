"""Where a served image lies in the world and in its scene: the one place that reads the index's scene
metadata (``scene``, ``window``, ``footprint``) and ``sources.json`` for the GeoJSON answer, the chip
pixels and the scene overview.

A chip is an image whose metadata has a ``window`` and a ``scene`` the version's ``scenes.json``
records: its pixels are that window read as the build read it (:func:`rsir.index.scenes.read_window`: the
same bands, nodata, reflectance rule or stretch). An image without a window (a plain tile) is served
from its original bytes as before.

Values come from :meth:`ServingIndex.metadata` (a footprint as a GeoJSON mapping, a window as four
ints); metadata written as text columns (JSON) reads the same, and an image without a footprint
falls back to its bbox as a box.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from rsir.index.scenes import Scene, is_remote, locate_scene
from rsir.service.chip_merge import Place
from rsir.service.serving_index import ServingIndex


@dataclass(frozen=True)
class ChipRef:
    """A chip's pixels: ``window`` (col_off, row_off, width, height) of ``scene``, read by the rule the
    build recorded for it (band paths resolved on this server)."""

    image_id: str
    scene: Scene
    window: tuple[int, int, int, int]
    size: int | None  # the scene's first band file's size at build time (None or 0: not recorded, remote)


def place_of(metadata: Mapping[str, Any]) -> Place:
    """A hit's :class:`Place` from its metadata row (the JSON answer's ``metadata``)."""
    scene = metadata.get("scene")
    return Place(_footprint(metadata), str(scene) if scene is not None else None, window_of(metadata))


def window_of(metadata: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    value = metadata.get("window")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, list | tuple) and len(value) == 4 and all(isinstance(v, int) for v in value):
        col, row, width, height = value
        return (col, row, width, height) if width > 0 and height > 0 else None
    return None


def chip_of(index: ServingIndex, position: int, image_id: str, archive_root: Path | None) -> ChipRef | None:
    """The chip at gallery ``position``, or None when it is not a chip or its scene is not recorded."""
    metadata = index.metadata(position)
    window = window_of(metadata)
    scene = index.scene(str(metadata.get("scene")))
    if window is None or scene is None:
        return None
    entry = index.sources.get(image_id)
    size = entry.size if entry is not None and not is_remote(entry.path) else None
    return ChipRef(image_id, locate_scene(scene, index.sources, archive_root), window, size)


def row_of(index: ServingIndex, image_id: str) -> dict[str, Any]:
    """The metadata row of a live image (``{}``: no such image)."""
    position = index.live_position(image_id)
    return index.metadata(position) if position is not None else {}


def _footprint(metadata: Mapping[str, Any]) -> BaseGeometry | None:
    value = metadata.get("footprint")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if isinstance(value, Mapping):
        try:
            return shape(value)
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
    bbox = metadata.get("bbox")
    if isinstance(bbox, list | tuple) and len(bbox) == 4:
        west, south, east, north = (float(v) for v in bbox)
        return box(west, south, east + 360 if east < west else east, north)  # west > east: crossing
    return None
