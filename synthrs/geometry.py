"""Shape outlines and placement helpers, all in normalised image coordinates.

Outlines are unit shapes (about 1 across) that :func:`place` scales, rotates (radians) and moves. Plain
``math`` is used instead of numpy: the polygons have 4 to 24 points, where numpy's call overhead dominates.
"""

from __future__ import annotations

import math

import numpy as np

from rsir.synthrs.scene import Pt
from rsir.synthrs.vocab import RGB, Box, shrink


def place(outline: tuple[Pt, ...], c: Pt, scale: float, angle: float) -> tuple[Pt, ...]:
    """``outline`` scaled by ``scale``, rotated by ``angle`` radians about the origin, centred on ``c``."""
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = c
    return tuple((cx + scale * (x * cos - y * sin), cy + scale * (x * sin + y * cos)) for x, y in outline)


def rect(w: float, h: float) -> tuple[Pt, ...]:
    """Axis-aligned ``w`` x ``h`` rectangle centred on the origin."""
    return ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))


def blob(rng: np.random.Generator, n: int = 14, wobble: float = 0.25) -> tuple[Pt, ...]:
    """Irregular closed outline of radius about 0.5 (ponds, clearings)."""
    radii = 0.5 * (1 + wobble * (rng.random(n) - 0.5) * 2)
    # Smoothing neighbouring radii avoids star-shaped spikes that read as noise rather than shoreline.
    radii = (radii + np.roll(radii, 1) + np.roll(radii, -1)) / 3
    return tuple(
        (float(r) * math.cos(2 * math.pi * k / n), float(r) * math.sin(2 * math.pi * k / n))
        for k, r in enumerate(radii)
    )


def _mirror(half: tuple[Pt, ...]) -> tuple[Pt, ...]:
    return half + tuple((-x, y) for x, y in reversed(half))


# Nose at y = -0.5; right half, mirrored for the left. Wings at the middle, tailplane at the back.
PLANE: tuple[Pt, ...] = _mirror(
    (
        (0.0, -0.5),
        (0.05, -0.44),
        (0.06, -0.1),
        (0.5, 0.08),
        (0.5, 0.14),
        (0.06, 0.06),
        (0.05, 0.34),
        (0.2, 0.44),
        (0.2, 0.5),
        (0.0, 0.46),
    )
)
# Bow at x = +0.5; hull about 4.5 times longer than wide.
SHIP: tuple[Pt, ...] = ((-0.5, -0.11), (0.3, -0.11), (0.5, 0.0), (0.3, 0.11), (-0.5, 0.11))
CAR: tuple[Pt, ...] = rect(1.0, 0.45)


def stadium(w: float, h: float, n: int = 8) -> tuple[Pt, ...]:
    """Running-track outline: a ``w`` x ``h`` box (``w >= h``) with semicircular ends, centred on 0."""
    r = h / 2
    cx = w / 2 - r
    right = [(cx + r * math.cos(a), r * math.sin(a)) for a in np.linspace(-math.pi / 2, math.pi / 2, n)]
    left = [(-cx - r * math.cos(a), -r * math.sin(a)) for a in np.linspace(-math.pi / 2, math.pi / 2, n)]
    return tuple((float(x), float(y)) for x, y in right + left)


def pie(radius: float, start: float, span: float, n: int = 10) -> tuple[Pt, ...]:
    """Circular sector from the origin, angles in radians (image y points down)."""
    arc = [
        (radius * math.cos(start + span * k / (n - 1)), radius * math.sin(start + span * k / (n - 1)))
        for k in range(n)
    ]
    return ((0.0, 0.0), *arc)


def grid_slots(rng: np.random.Generator, box: Box, gap: float, n: int) -> list[Pt]:
    """``n`` centres inside ``box`` (a box for centres), pairwise at least ``gap`` apart on some axis.

    Centres sit on a jittered lattice. Cell order and jitter are drawn for every lattice point whatever
    ``n`` is, so the slots for ``n`` are a prefix of those for ``n + 1``: a twin with more objects keeps
    the other twin's objects where they were. Raises ``ValueError`` when ``n`` points do not fit.
    """
    x0, y0, x1, y1 = box
    cols = int((x1 - x0) / gap + _SLACK) + 1
    rows = int((y1 - y0) / gap + _SLACK) + 1
    sx = (x1 - x0) / (cols - 1) if cols > 1 else 0.0
    sy = (y1 - y0) / (rows - 1) if rows > 1 else 0.0
    # Jitter never closes a gap below ``gap``: neighbours move at most (spacing - gap) / 2 each.
    jx = (sx - gap) / 2 if cols > 1 else 0.0
    jy = (sy - gap) / 2 if rows > 1 else 0.0
    order = rng.permutation(cols * rows)
    shift = rng.uniform(-1.0, 1.0, size=(cols * rows, 2))
    if n > cols * rows:
        raise ValueError(f"{n} slots do not fit a {cols}x{rows} lattice")
    ox = x0 if cols > 1 else (x0 + x1) / 2
    oy = y0 if rows > 1 else (y0 + y1) / 2
    out: list[Pt] = []
    for k in order[:n]:
        r, q = divmod(int(k), cols)
        x = min(x1, max(x0, ox + q * sx + float(shift[k, 0]) * jx))
        y = min(y1, max(y0, oy + r * sy + float(shift[k, 1]) * jy))
        out.append((x, y))
    return out


_SLACK = 1e-6


def frame(side: str, p: Pt) -> Pt:
    """Map ``p = (u, v)`` from the canonical frame where ``side`` is ``left`` (u: distance from that
    image edge, v: along it) to image coordinates, so one layout serves all four sides."""
    u, v = p
    if side == "left":
        return (u, v)
    if side == "right":
        return (1.0 - u, v)
    if side == "top":
        return (v, u)
    return (v, 1.0 - u)


def framed(side: str, pts: tuple[Pt, ...]) -> tuple[Pt, ...]:
    return tuple(frame(side, p) for p in pts)


def frame_box(side: str, u0: float, v0: float, u1: float, v1: float) -> Box:
    """Image-space box of the canonical-frame box ``[u0, u1] x [v0, v1]``."""
    (ax, ay), (bx, by) = frame(side, (u0, v0)), frame(side, (u1, v1))
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def scatter(rng: np.random.Generator, box: Box, n: int, margin: float = 0.0) -> list[Pt]:
    """``n`` uniform points inside ``box`` shrunk by ``margin`` (trees and other filler)."""
    x0, y0, x1, y1 = shrink(box, margin)
    xy = rng.random((n, 2))
    return [(x0 + float(a) * (x1 - x0), y0 + float(b) * (y1 - y0)) for a, b in xy]


def tint(colour: RGB, rng: np.random.Generator, amount: int = 14) -> RGB:
    """``colour`` with a random brightness shift of up to ``amount`` levels plus a third of that per channel.

    One generator call per tint: scenes tint thousands of shapes, and each call costs microseconds.
    """
    u = rng.random(4) * 2 - 1
    common = float(u[0]) * amount
    own = amount / 3
    r, g, b = (max(0, min(255, int(c + common + float(o) * own))) for c, o in zip(colour, u[1:], strict=True))
    return (r, g, b)


def darker(colour: RGB, factor: float = 0.7) -> RGB:
    r, g, b = (int(c * factor) for c in colour)
    return (r, g, b)


def wavy(
    rng: np.random.Generator, start: Pt, end: Pt, amplitude: float, n: int = 12, waves: float = 1.5
) -> tuple[Pt, ...]:
    """Polyline from ``start`` to ``end`` meandering sideways by at most ``amplitude`` (rivers, shores)."""
    (sx, sy), (ex, ey) = start, end
    length = math.hypot(ex - sx, ey - sy) or 1.0
    nx, ny = -(ey - sy) / length, (ex - sx) / length
    phase = float(rng.uniform(0, 2 * math.pi))
    pts = []
    for k in range(n):
        t = k / (n - 1)
        off = amplitude * math.sin(phase + 2 * math.pi * waves * t)
        pts.append((sx + t * (ex - sx) + off * nx, sy + t * (ey - sy) + off * ny))
    return tuple(pts)
