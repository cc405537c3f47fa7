"""Which hits of one query are the same place seen twice: overlapping chips of one scene.

A scene cut with overlap puts an object near a chip edge into two to four chips, and a query that
finds it finds them all: without merging, the map shows "ten copies of one ship". Two hits
**overlap** when they come from the same scene (both ``scene`` known and equal) and

- both windows are known: the pixel windows share at least one pixel (adjacent grid chips with
  overlap > 0 do; chips of a grid without overlap only touch, and do not);
- otherwise both footprints are known: their intersection over union exceeds ``iou`` (default
  :data:`MERGE_IOU`), measured in degrees on unwrapped footprints (fine at chip size).

Hits of different scenes, or without a scene (plain tiles), never merge: two acquisitions of one
place are different answers. Merging is greedy in rank order: each hit joins the best-ranked kept
hit it overlaps, else it is kept; a hit is compared with kept hits only, so chains do not grow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shapely.affinity import translate
from shapely.geometry.base import BaseGeometry

from rsir.service.antimeridian import unwrap

MERGE_IOU = 0.1


@dataclass(frozen=True)
class Place:
    """Where a hit is: its WGS84 ``footprint`` (None: unknown), ``scene`` id and pixel ``window``
    ``(col_off, row_off, width, height)`` in that scene (None: unknown or not a chip)."""

    footprint: BaseGeometry | None = None
    scene: str | None = None
    window: tuple[int, int, int, int] | None = None


def windows_share_pixels(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    cols = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    rows = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return cols > 0 and rows > 0


def footprint_iou(a: BaseGeometry, b: BaseGeometry) -> float:
    """Intersection over union in degrees, the antimeridian allowed for: ``b`` is also compared
    shifted by 360 either way (one crossing footprint reaches past 180, a neighbour may not)."""
    a, b = unwrap(a), unwrap(b)
    best = 0.0
    for shift in (0, 360, -360):
        moved = translate(b, xoff=shift) if shift else b
        union = a.union(moved).area
        if union > 0:
            best = max(best, a.intersection(moved).area / union)
    return best


def overlap(a: Place, b: Place, iou: float = MERGE_IOU) -> bool:
    if a.scene is None or a.scene != b.scene:
        return False
    if a.window is not None and b.window is not None:
        return windows_share_pixels(a.window, b.window)
    if a.footprint is not None and b.footprint is not None:
        return footprint_iou(a.footprint, b.footprint) > iou
    return False


def merge_overlapping(places: Sequence[Place], iou: float | None = None) -> list[tuple[int, list[int]]]:
    """``places`` in rank order -> ``[(kept, [merged into it, ...]), ...]`` in rank order. A negative
    ``iou`` turns merging off (every hit kept alone)."""
    threshold = MERGE_IOU if iou is None else iou
    groups: list[tuple[int, list[int]]] = []
    by_scene: dict[str, list[tuple[int, list[int]]]] = {}  # only hits of one scene can merge
    for i, place in enumerate(places):
        same = by_scene.setdefault(place.scene, []) if place.scene is not None else []
        if threshold >= 0:
            home = next((g for g in same if overlap(places[g[0]], place, threshold)), None)
            if home is not None:
                home[1].append(i)
                continue
        group: tuple[int, list[int]] = (i, [])
        groups.append(group)
        same.append(group)
    return groups
