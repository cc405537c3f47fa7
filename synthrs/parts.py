"""Reusable scene parts (trees, houses, roads, vehicles) drawn through a :class:`Builder`.

Sizes are normalised to the image side; ``shadow`` offsets are about 1-2 % of it, which at 224 px gives
the 2-4 px shadows that make flat shapes read as raised objects from above.
"""

from __future__ import annotations

import math

import numpy as np

from rsir.synthrs.geometry import CAR, PLANE, SHIP, darker, place, rect, tint
from rsir.synthrs.scene import Builder, Pt
from rsir.synthrs.vocab import ASPHALT, RGB, SOLID, Box


def trees(
    b: Builder,
    rng: np.random.Generator,
    centres: list[Pt],
    colour: RGB,
    radius: tuple[float, float] = (0.018, 0.03),
    group: str | None = None,
) -> None:
    """Round canopies with a shadow and a lighter crown so that they read as trees, not dots."""
    radii = rng.uniform(radius[0], radius[1], size=len(centres))
    for (x, y), r in zip(centres, radii, strict=True):
        c = tint(colour, rng, 12)
        b.circle((x, y), float(r), c, group, shadow=float(r) * 0.45)
        b.circle((x - float(r) * 0.25, y - float(r) * 0.25), float(r) * 0.45, _lighter(c), group)


def house(
    b: Builder, rng: np.random.Generator, c: Pt, w: float, h: float, angle: float, roof: RGB, group: str
) -> None:
    """Gabled roof seen from above: a rectangle with a darker ridge line along its long side."""
    colour = tint(roof, rng, 12)
    b.poly(place(rect(w, h), c, 1.0, angle), colour, group, shadow=0.012)
    ridge = place(rect(w * 0.9, h * 0.08), c, 1.0, angle)
    b.poly(ridge, darker(colour, 0.78), group)


def house_radius(w: float, h: float) -> float:
    """Radius of the circle enclosing a ``w`` x ``h`` house at any rotation."""
    return math.hypot(w, h) / 2


def road(b: Builder, pts: tuple[Pt, ...], width: float, group: str | None = None, marks: bool = True) -> None:
    """Asphalt polyline with an optional pale centre line."""
    b.line(pts, ASPHALT, width, group)
    if marks:
        b.line(pts, (176, 176, 168), max(width * 0.08, 0.003))


def plane(b: Builder, rng: np.random.Generator, c: Pt, span: float, angle: float, colour: RGB) -> None:
    b.poly(place(PLANE, c, span, angle), tint(colour, rng, 10), "plane", shadow=span * 0.12)


def plane_radius(span: float) -> float:
    """Radius of the circle enclosing a plane of wingspan ``span`` at any rotation."""
    return span * 0.53


def car(
    b: Builder, rng: np.random.Generator, c: Pt, length: float, angle: float, colour: RGB, group: str
) -> None:
    body = tint(colour, rng, 10)
    b.poly(place(CAR, c, length, angle), body, group, shadow=length * 0.12)
    # Windscreen strip: a darker band across the front third reads as a car rather than a box.
    cos, sin = math.cos(angle), math.sin(angle)
    front = (c[0] + 0.18 * length * cos, c[1] + 0.18 * length * sin)
    b.poly(place(rect(0.14, 0.38), front, length, angle), darker(body, 0.55), group)


def ship(
    b: Builder, rng: np.random.Generator, c: Pt, length: float, angle: float, colour: RGB, group: str
) -> None:
    hull = tint(colour, rng, 10)
    b.poly(place(SHIP, c, length, angle), hull, group, shadow=length * 0.06)
    cos, sin = math.cos(angle), math.sin(angle)
    aft = (c[0] - 0.2 * length * cos, c[1] - 0.2 * length * sin)
    b.poly(place(rect(0.22, 0.14), aft, length, angle), darker(hull, 0.8), group)


def tank(b: Builder, rng: np.random.Generator, c: Pt, r: float, colour: RGB) -> None:
    """Storage tank: disc with a darker rim ring and a central vent, casting a long round shadow."""
    body = tint(colour, rng, 10)
    b.circle(c, r, darker(body, 0.8), "tank", shadow=r * 0.35)
    b.circle(c, r * 0.86, body, "tank")
    b.circle(c, r * 0.12, darker(body, 0.7), "tank")


def buildings_in(
    b: Builder,
    rng: np.random.Generator,
    box: Box,
    cell: float,
    fill: float,
    group: str,
    roofs: RGB | None = None,
    avoid: tuple[Box, ...] = (),
) -> int:
    """Fill ``box`` with a jittered grid of axis-aligned roofs; returns how many were drawn.

    ``fill`` is the probability that a cell holds a building; ``roofs`` fixes the colour, otherwise each
    roof is a muted grey/beige so that uncoloured buildings never look like a colour a caption names.
    Cells whose building would overlap a box of ``avoid`` (roads) stay empty.
    """
    x0, y0, x1, y1 = box
    cols = max(1, int((x1 - x0) / cell))
    rows = max(1, int((y1 - y0) / cell))
    cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
    draws = rng.random((rows, cols, 4))
    n = 0
    for r in range(rows):
        for q in range(cols):
            keep, sw, sh, shade = (float(v) for v in draws[r, q])
            if keep > fill:
                continue
            w, h = cw * (0.55 + 0.3 * sw), ch * (0.55 + 0.3 * sh)
            cx, cy = x0 + (q + 0.5) * cw, y0 + (r + 0.5) * ch
            if any(_overlaps((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), a) for a in avoid):
                continue
            base = roofs if roofs is not None else _muted(shade)
            house(b, rng, (cx, cy), w, h, 0.0, base, group)
            n += 1
    return n


def _muted(t: float) -> RGB:
    grey, beige = SOLID["grey"], (168, 156, 138)
    r, g, bl = (int(a + (bb - a) * t) for a, bb in zip(grey, beige, strict=True))
    return (r, g, bl)


def _lighter(c: RGB) -> RGB:
    r, g, b = (min(255, int(v * 1.18 + 6)) for v in c)
    return (r, g, b)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
