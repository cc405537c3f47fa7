"""Transport scene classes: airport, parking lot, port, bridge, roundabout.

Each layout function reads its attributes (counts, colours, sides), declares the caption-visible groups,
then draws. Random draws that twins must share come from named streams (``b.rng(tag)``).
"""

from __future__ import annotations

import math

from rsir.synthrs.geometry import frame_box, framed, grid_slots, place, rect, scatter, tint, wavy
from rsir.synthrs.parts import buildings_in, car, plane, plane_radius, road, ship, trees
from rsir.synthrs.scene import Attrs, Builder, ClassSpec, Pt
from rsir.synthrs.vocab import BARE, FOLIAGE, GRASS, OPPOSITE, SIDES, SOLID, URBAN, WATER

_COUNTS = tuple(range(1, 7))
# Nose/bow direction per side that points from a group towards the image centre (radians, y down).
_INWARD = {"left": 0.0, "right": math.pi, "top": math.pi / 2, "bottom": -math.pi / 2}
_CONCRETE = (170, 168, 160)


def _airport(a: Attrs, b: Builder) -> None:
    n, colour, side = a.i("plane_count"), a.s("plane_colour"), a.s("plane_side")
    opp = OPPOSITE[side]
    geo = b.rng("layout")
    b.background(GRASS, 0.3)
    b.declare("plane", n, colour, side)
    b.declare("terminal", 1, None, opp)
    b.declare("runway", 1, None, opp)
    b.poly(framed(side, ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))), tint(_CONCRETE, geo, 8))
    taxi_v = float(geo.uniform(0.06, 0.94))
    road(b, framed(side, ((0.3, taxi_v), (0.86, taxi_v))), 0.03, marks=False)
    length = float(geo.uniform(0.55, 0.8))
    v0 = float(geo.uniform(0.06, 0.94 - length))
    terminal = framed(side, ((0.56, v0), (0.66, v0), (0.66, v0 + length), (0.56, v0 + length)))
    b.poly(terminal, tint((196, 194, 188), geo, 10), "terminal", shadow=0.015)
    road(b, framed(side, ((0.84, -0.05), (0.84, 1.05))), float(geo.uniform(0.08, 0.12)), "runway")
    span = float(geo.uniform(0.12, 0.17))
    rad = plane_radius(span)
    slots = grid_slots(
        b.rng("planes"), frame_box(side, 0.04 + rad, 0.04 + rad, 0.46 - rad, 0.96 - rad), 2 * rad, n
    )
    angles = b.rng("plane_angles").uniform(-math.pi, math.pi, size=6)
    aligned = bool(geo.random() < 0.6)
    for k, c in enumerate(slots):
        # PLANE points up (-y) at angle 0, so facing inwards is _INWARD + 90 degrees.
        angle = _INWARD[side] + math.pi / 2 + 0.12 * float(angles[k]) if aligned else float(angles[k])
        plane(b, geo, c, span * float(geo.uniform(0.92, 1.0)), angle, SOLID[colour])


def _parking_lot(a: Attrs, b: Builder) -> None:
    n, colour, side = a.i("car_count"), a.s("car_colour"), a.s("car_side")
    geo = b.rng("layout")
    b.background(URBAN, 0.25)
    b.declare("parking_lot", 1, None, "center")
    b.declare("tree", 0, "green", "around")
    b.declare("car", n, colour, side)
    perimeter = b.rng("trees").uniform(0, 4, size=int(geo.integers(14, 26)))
    edge = [_on_square(float(t), 0.05) for t in perimeter]
    b.set_count("tree", len(edge))
    trees(b, geo, edge, FOLIAGE["green"], group="tree")
    lot = place(rect(0.8, 0.8), (0.5, 0.5), 1.0, 0.0)
    b.poly(lot, tint((88, 90, 92), geo, 8), "parking_lot")
    vertical = bool(geo.random() < 0.5)
    for k in range(1, 8):
        t = 0.1 + 0.1 * k
        line = ((t, 0.12), (t, 0.88)) if vertical else ((0.12, t), (0.88, t))
        b.line(line, (170, 170, 160), 0.004)
    length = float(geo.uniform(0.07, 0.09))
    half = {"left": (0.1, 0.1, 0.46, 0.9), "right": (0.54, 0.1, 0.9, 0.9)}
    half |= {"top": (0.1, 0.1, 0.9, 0.46), "bottom": (0.1, 0.54, 0.9, 0.9)}
    x0, y0, x1, y1 = half[side]
    r = length / 2 + 0.005
    slots = grid_slots(b.rng("cars"), (x0 + r, y0 + r, x1 - r, y1 - r), length * 1.1, n)
    base = math.pi / 2 if vertical else 0.0  # cars park along the painted lines
    jit = b.rng("car_angles").uniform(-1, 1, size=(6, 2))
    for k, c in enumerate(slots):
        angle = base + 0.08 * float(jit[k, 0]) + (math.pi if jit[k, 1] > 0 else 0.0)
        car(b, geo, c, length, angle, SOLID[colour], "car")


def _port(a: Attrs, b: Builder) -> None:
    n, colour, side = a.i("ship_count"), a.s("ship_colour"), a.s("ship_side")
    opp = OPPOSITE[side]
    geo = b.rng("layout")
    b.background(URBAN, 0.25)
    b.declare("sea", 1, "blue", side)
    b.declare("pier", 1, None, opp)
    b.declare("building", 0, None, opp)
    b.declare("ship", n, colour, side)
    b.poly(
        framed(side, ((-0.01, -0.01), (0.5, -0.01), (0.5, 1.01), (-0.01, 1.01))),
        tint(WATER["blue"], geo, 8),
        "sea",
    )
    b.poly(
        framed(side, ((0.5, -0.01), (0.57, -0.01), (0.57, 1.01), (0.5, 1.01))),
        tint(_CONCRETE, geo, 8),
        "pier",
    )
    box = frame_box(side, 0.62, 0.04, 0.96, 0.96)
    b.set_count("building", buildings_in(b, geo, box, float(geo.uniform(0.07, 0.1)), 0.75, "building"))
    length = float(geo.uniform(0.1, 0.15))
    rad = length / 2
    slots = grid_slots(
        b.rng("ships"), frame_box(side, 0.04 + rad, 0.04 + rad, 0.46 - rad, 0.96 - rad), length, n
    )
    along = math.pi / 2 if side in ("left", "right") else 0.0
    jit = b.rng("ship_angles").uniform(-1, 1, size=(6, 2))
    docked = bool(geo.random() < 0.6)
    for k, c in enumerate(slots):
        flip = math.pi if jit[k, 1] > 0 else 0.0
        angle = along + flip + 0.2 * float(jit[k, 0]) if docked else math.pi * float(jit[k, 0])
        ship(b, geo, c, length * float(geo.uniform(0.85, 1.0)), angle, SOLID[colour], "ship")


def _bridge(a: Attrs, b: Builder) -> None:
    n, colour, water = a.i("bridge_count"), a.s("bridge_colour"), a.s("river_colour")
    geo = b.rng("layout")
    axis = "left" if geo.random() < 0.5 else "top"  # river runs along v: vertical or horizontal
    b.background(GRASS, 0.3)
    b.declare("tree", 0, "green", "around")
    b.declare("river", 1, water, "center")
    b.declare("road", n, None, "around")
    b.declare("bridge", n, colour, "around")
    spots = scatter(b.rng("trees"), (0.0, 0.0, 1.0, 1.0), int(geo.integers(20, 40)), 0.03)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    width = float(geo.uniform(0.14, 0.22))
    amp = 0.02
    course = framed(axis, wavy(geo, (0.5, -0.05), (0.5, 1.05), amp))
    b.line(course, tint(BARE, geo, 10), width + 0.03)
    b.line(course, tint(WATER[water], geo, 8), width, "river")
    where = b.rng("bridges").permutation(3)
    shift = b.rng("bridges_jitter").uniform(-0.05, 0.05, size=3)
    half = width / 2 + amp + 0.04
    deck = float(geo.uniform(0.035, 0.05))
    for k in range(n):
        v = 0.18 + 0.32 * int(where[k]) + float(shift[k])
        road(b, framed(axis, ((-0.05, v), (1.05, v))), deck * 0.8, "road")
        span = framed(axis, ((0.5 - half, v - deck / 2), (0.5 + half, v - deck / 2)))
        span += framed(axis, ((0.5 + half, v + deck / 2), (0.5 - half, v + deck / 2)))
        b.poly(span, tint(SOLID[colour], geo, 10), "bridge", shadow=0.012)


def _roundabout(a: Attrs, b: Builder) -> None:
    n, island, cars, car_colour = a.i("road_count"), a.s("island_colour"), a.i("car_count"), a.s("car_colour")
    geo = b.rng("layout")
    b.background(GRASS if geo.random() < 0.5 else URBAN, 0.3)
    b.declare("tree", 0, "green", "around")
    b.declare("road", n, None, "around")
    b.declare("roundabout", 1, None, "center")
    b.declare("island", 1, island, "center")
    b.declare("car", cars, car_colour, "around")
    spots = scatter(b.rng("trees"), (0.0, 0.0, 1.0, 1.0), int(geo.integers(15, 35)), 0.03)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    c: Pt = (0.5 + float(geo.uniform(-0.04, 0.04)), 0.5 + float(geo.uniform(-0.04, 0.04)))
    ring, lane = float(geo.uniform(0.13, 0.18)), float(geo.uniform(0.05, 0.07))
    start = float(geo.uniform(0, 2 * math.pi))
    jit = b.rng("arms").uniform(-0.15, 0.15, size=6)
    for k in range(n):
        t = start + 2 * math.pi * k / n + float(jit[k])
        road(b, (c, (c[0] + math.cos(t), c[1] + math.sin(t))), lane, "road")
    b.circle(c, ring + lane / 2, tint((80, 82, 84), geo, 6), "roundabout")
    b.circle(c, ring - lane / 2, tint(SOLID[island], geo, 10), "island")
    b.circle(c, (ring - lane / 2) * 0.45, tint(SOLID[island], geo, 18), "island")
    slots = b.rng("ring_cars").permutation(8)
    for k in range(cars):
        phi = 2 * math.pi * (int(slots[k]) + 0.5) / 8 + start
        at = (c[0] + ring * math.cos(phi), c[1] + ring * math.sin(phi))
        car(b, geo, at, 0.05, phi, SOLID[car_colour], "car")


def _on_square(t: float, m: float) -> Pt:
    """Point at perimeter parameter ``t`` in ``[0, 4)`` on the square inset by ``m``."""
    side, f = int(t), t - int(t)
    span = 1 - 2 * m
    return [(m + f * span, m), (1 - m, m + f * span), (1 - m - f * span, 1 - m), (m, 1 - m - f * span)][side]


AIRPORT = ClassSpec(
    "airport",
    (
        ("plane_count", _COUNTS),
        ("plane_colour", ("white", "grey", "red", "blue", "yellow")),
        ("plane_side", SIDES),
    ),
    _airport,
)
PARKING_LOT = ClassSpec(
    "parking_lot",
    (
        ("car_count", _COUNTS),
        ("car_colour", ("white", "red", "blue", "black", "yellow")),
        ("car_side", SIDES),
    ),
    _parking_lot,
)
PORT = ClassSpec(
    "port",
    (
        ("ship_count", _COUNTS),
        ("ship_colour", ("white", "red", "grey", "black", "yellow")),
        ("ship_side", SIDES),
    ),
    _port,
)
BRIDGE = ClassSpec(
    "bridge",
    (
        ("bridge_count", (1, 2, 3)),
        ("bridge_colour", ("white", "grey", "red")),
        ("river_colour", ("blue", "green", "brown", "grey")),
    ),
    _bridge,
)
ROUNDABOUT = ClassSpec(
    "roundabout",
    (
        ("road_count", (3, 4, 5, 6)),
        ("island_colour", ("green", "white", "yellow")),
        ("car_count", (0, 1, 2, 3, 4)),
        ("car_colour", ("red", "white", "blue", "black")),
    ),
    _roundabout,
)
