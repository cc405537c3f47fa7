"""Natural and agricultural scene classes: farmland, forest, river, pond, beach."""

from __future__ import annotations

import itertools
import math

from rsir.synthrs.geometry import blob, darker, frame_box, framed, grid_slots, place, scatter, tint, wavy
from rsir.synthrs.parts import house, road, ship, trees
from rsir.synthrs.scene import Attrs, Builder, ClassSpec, Pt
from rsir.synthrs.vocab import BARE, FIELDS, FOLIAGE, GRASS, OPPOSITE, SANDS, SIDES, SOLID, WATER

_MUTED_ROOF = (170, 158, 140)


def _farmland(a: Attrs, b: Builder) -> None:
    n, colour, side = a.i("field_count"), a.s("field_colour"), a.s("road_side")
    geo = b.rng("layout")
    b.background(BARE, 0.25)
    b.declare("road", 1, None, side)
    b.declare("field", n, colour, "around")
    road(b, framed(side, ((0.07, -0.05), (0.07, 1.05))), 0.045, "road", marks=False)
    weights = geo.uniform(0.6, 1.4, size=n)
    gap = 0.018
    usable = 0.96 - gap * (n - 1)
    v = 0.02
    for w in weights / weights.sum():
        length = usable * float(w)
        base = tint(FIELDS[colour], geo, 22)
        b.poly(framed(side, ((0.14, v), (0.98, v), (0.98, v + length), (0.14, v + length))), base, "field")
        # Furrows run along or across each field, like neighbouring plots ploughed differently.
        furrow = darker(base, 0.86)
        if geo.random() < 0.5:
            for k in range(1, max(2, int(length / 0.025))):
                t = v + k * length / max(2, int(length / 0.025))
                b.line(framed(side, ((0.15, t), (0.97, t))), furrow, 0.004)
        else:
            for k in range(1, 30):
                u = 0.14 + k * 0.028
                b.line(framed(side, ((u, v + 0.005), (u, v + length - 0.005))), furrow, 0.004)
        v += length + gap


def _forest(a: Attrs, b: Builder) -> None:
    colour, side, n = a.s("tree_colour"), a.s("road_side"), a.i("house_count")
    geo = b.rng("layout")
    b.background(darker(FOLIAGE[colour], 0.75), 0.35)
    b.declare("tree", 0, colour, "around")
    b.declare("road", 1, None, side)
    b.declare("building", n, None, OPPOSITE[side])
    grid = b.rng("canopy")
    spots = [
        (
            (q + 0.5 + float(grid.uniform(-0.4, 0.4))) / 11,
            (r + 0.5 + float(grid.uniform(-0.4, 0.4))) / 11,
        )
        for r in range(11)
        for q in range(11)
    ]
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE[colour], (0.03, 0.045), "tree")
    course = framed(side, wavy(geo, (0.15, -0.05), (0.15, 1.05), 0.03))
    b.line(course, tint(BARE, geo, 10), 0.035, "road")
    slots = grid_slots(b.rng("houses"), frame_box(side, 0.62, 0.1, 0.88, 0.9), 0.15, n)
    for c in slots:
        b.circle(c, 0.055, tint(BARE, geo, 10))
        house(b, geo, c, 0.07, 0.05, float(geo.uniform(0, math.pi)), _MUTED_ROOF, "building")


def _river(a: Attrs, b: Builder) -> None:
    colour, side = a.s("river_colour"), a.s("river_side")
    n, boat_colour = a.i("boat_count"), a.s("boat_colour")
    geo = b.rng("layout")
    b.background(GRASS, 0.3)
    road_u = float(geo.uniform(0.62, 0.7))
    b.declare("tree", 0, "green", "around")
    b.declare("river", 1, colour, side)
    b.declare("road", 1, None, OPPOSITE[side])
    b.declare("building", 0, None, OPPOSITE[side])
    b.declare("boat", n, boat_colour, side)
    spots = scatter(
        b.rng("trees"), frame_box(side, 0.0, 0.0, road_u - 0.05, 1.0), int(geo.integers(20, 40)), 0.03
    )
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    width, amp = float(geo.uniform(0.12, 0.18)), float(geo.uniform(0.02, 0.045))
    canonical = wavy(geo, (0.25, -0.05), (0.25, 1.05), amp)
    b.line(framed(side, canonical), tint(BARE, geo, 10), width + 0.025)
    b.line(framed(side, canonical), tint(WATER[colour], geo, 8), width, "river")
    road(b, framed(side, ((road_u, -0.05), (road_u, 1.05))), 0.045, "road")
    box = frame_box(side, road_u + 0.08, 0.06, 0.94, 0.94)
    b.set_count("building", _houses_in(b, box))
    where = b.rng("boats").permutation(5)
    length = float(geo.uniform(0.045, 0.06))
    for k in range(n):
        v = 0.12 + 0.19 * int(where[k])
        at = framed(side, ((_u_at(canonical, v), v),))[0]
        angle = math.pi / 2 + float(geo.uniform(-0.2, 0.2)) + (math.pi if geo.random() < 0.5 else 0.0)
        ship(b, geo, at, length, angle, SOLID[boat_colour], "boat")


def _houses_in(b: Builder, box: tuple[float, float, float, float]) -> int:
    rng = b.rng("river_houses")
    spots = grid_slots(rng, box, 0.09, int(rng.integers(3, 9)))
    for c in spots:
        house(b, rng, c, 0.06, 0.045, float(rng.uniform(0, math.pi)), _MUTED_ROOF, "building")
    return len(spots)


def _u_at(course: tuple[Pt, ...], v: float) -> float:
    """Canonical u of a polyline at height ``v`` (linear between its vertices; v increases along it)."""
    for (u0, v0), (u1, v1) in itertools.pairwise(course):
        if v0 <= v <= v1:
            return u0 + (u1 - u0) * (v - v0) / (v1 - v0)
    return course[-1][0]


def _pond(a: Attrs, b: Builder) -> None:
    n, colour, side = a.i("pond_count"), a.s("pond_colour"), a.s("pond_side")
    geo = b.rng("layout")
    b.background(GRASS, 0.35)
    b.declare("tree", 0, "green", "around")
    b.declare("pond", n, colour, side)
    spots = scatter(b.rng("trees"), (0.0, 0.0, 1.0, 1.0), int(geo.integers(20, 45)), 0.03)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    r = float(geo.uniform(0.055, 0.08))
    env = 1.25 * r * 1.12  # blob radius is at most 0.625 of its scale (2 r), bank 12 % wider
    slots = grid_slots(
        b.rng("ponds"), frame_box(side, 0.04 + env, 0.04 + env, 0.46 - env, 0.96 - env), 2 * env, n
    )
    shapes = b.rng("pond_shapes")
    for c in slots:
        outline = blob(shapes, 14, 0.25)
        angle = float(shapes.uniform(0, math.pi))
        b.poly(place(outline, c, 2 * r * 1.12, angle), tint(BARE, geo, 10), "pond")
        b.poly(place(outline, c, 2 * r, angle), tint(WATER[colour], geo, 8), "pond")


def _beach(a: Attrs, b: Builder) -> None:
    side, sea, sand, n = a.s("sea_side"), a.s("sea_colour"), a.s("sand_colour"), a.i("boat_count")
    geo = b.rng("layout")
    b.background(GRASS, 0.3)
    b.declare("tree", 0, "green", OPPOSITE[side])
    b.declare("beach", 1, sand, "center")
    b.declare("sea", 1, sea, side)
    b.declare("boat", n, "white", side)
    spots = scatter(b.rng("trees"), frame_box(side, 0.7, 0.0, 1.0, 1.0), int(geo.integers(10, 25)), 0.035)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    shore = wavy(geo, (0.4, -0.05), (0.4, 1.05), 0.03)
    inland = wavy(geo, (0.62, 1.05), (0.62, -0.05), 0.03)
    b.poly(framed(side, shore + inland), tint(SANDS[sand], geo, 8), "beach")
    b.poly(framed(side, ((-0.01, -0.05), *shore, (-0.01, 1.05))), tint(WATER[sea], geo, 8), "sea")
    for off, width in ((0.018, 0.006), (0.045, 0.004)):
        b.line(framed(side, tuple((u - off, v) for u, v in shore)), (214, 220, 220), width)
    length = float(geo.uniform(0.05, 0.08))
    rad = length / 2
    slots = grid_slots(
        b.rng("boats"), frame_box(side, 0.04 + rad, 0.06 + rad, 0.3 - rad, 0.94 - rad), length, n
    )
    for c in slots:
        ship(b, geo, c, length, float(geo.uniform(0, 2 * math.pi)), SOLID["white"], "boat")


FARMLAND = ClassSpec(
    "farmland",
    (("field_count", (2, 3, 4, 5, 6)), ("field_colour", ("green", "yellow", "brown")), ("road_side", SIDES)),
    _farmland,
)
FOREST = ClassSpec(
    "forest",
    (
        ("tree_colour", ("green", "yellow", "orange", "red")),
        ("road_side", SIDES),
        ("house_count", (0, 1, 2, 3)),
    ),
    _forest,
)
RIVER = ClassSpec(
    "river",
    (
        ("river_colour", ("blue", "green", "brown", "grey")),
        ("river_side", ("left", "right")),
        ("boat_count", (0, 1, 2, 3)),
        ("boat_colour", ("white", "red", "yellow")),
    ),
    _river,
)
POND = ClassSpec(
    "pond",
    (("pond_count", (1, 2, 3, 4)), ("pond_colour", ("blue", "green", "brown", "grey")), ("pond_side", SIDES)),
    _pond,
)
BEACH = ClassSpec(
    "beach",
    (
        ("sea_side", SIDES),
        ("sea_colour", ("blue", "green", "grey")),
        ("sand_colour", ("yellow", "white")),
        ("boat_count", (0, 1, 2, 3)),
    ),
    _beach,
)
