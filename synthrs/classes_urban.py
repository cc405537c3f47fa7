"""Built-up scene classes: dense and sparse residential, storage tanks, playground, baseball field."""

from __future__ import annotations

import math

from rsir.synthrs.geometry import frame_box, framed, grid_slots, pie, place, rect, scatter, stadium, tint
from rsir.synthrs.parts import buildings_in, house, house_radius, road, tank, trees
from rsir.synthrs.scene import Attrs, Builder, ClassSpec
from rsir.synthrs.vocab import BARE, FOLIAGE, GRASS, OPPOSITE, SIDES, SOLID, URBAN, Box

_COUNTS = tuple(range(1, 7))
_ROOFS = ("red", "grey", "white", "blue", "brown")


def _along_v(side: str) -> float:
    """Image angle (radians) of the canonical v axis for ``side``: vertical for left/right."""
    return math.pi / 2 if side in ("left", "right") else 0.0


def _dense_residential(a: Attrs, b: Builder) -> None:
    roof, n_roads, side = a.s("roof_colour"), a.i("road_count"), a.s("tree_side")
    geo = b.rng("layout")
    b.background(URBAN, 0.2)
    b.declare("tree", 0, "green", side)
    b.declare("road", n_roads, None, "around")
    b.declare("building", 0, roof, "around")
    depth = float(geo.uniform(0.18, 0.26))
    spots = scatter(b.rng("trees"), frame_box(side, 0.0, 0.0, depth, 1.0), int(geo.integers(30, 50)), 0.03)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    width = float(geo.uniform(0.035, 0.05))
    cuts = b.rng("roads").uniform(0.25, 0.75, size=3)
    avoid: list[Box] = [frame_box(side, 0.0, 0.0, depth + 0.01, 1.0)]
    for k in range(n_roads):
        # Roads alternate: across the tree band (along u), then parallel to it (along v).
        if k % 2 == 0:
            t = float(cuts[k])
            line = framed(side, ((depth - 0.02, t), (1.05, t)))
            avoid.append(frame_box(side, depth, t - width, 1.0, t + width))
        else:
            t = depth + 0.12 + (0.7 - depth) * float(cuts[k])
            line = framed(side, ((t, -0.05), (t, 1.05)))
            avoid.append(frame_box(side, t - width, 0.0, t + width, 1.0))
        road(b, line, width, "road")
    box = frame_box(side, depth + 0.02, 0.0, 1.0, 1.0)
    cell = float(geo.uniform(0.07, 0.095))
    count = buildings_in(b, geo, box, cell, 0.9, "building", SOLID[roof], tuple(avoid))
    b.set_count("building", count)


def _sparse_residential(a: Attrs, b: Builder) -> None:
    n, roof, side = a.i("house_count"), a.s("roof_colour"), a.s("house_side")
    geo = b.rng("layout")
    b.background(GRASS, 0.3)
    b.declare("road", 1, None, "center")
    b.declare("tree", 0, "green", OPPOSITE[side])
    b.declare("building", n, roof, side)
    road(b, framed(side, ((0.5, -0.05), (0.5, 1.05))), 0.05, "road")
    spots = scatter(b.rng("trees"), frame_box(side, 0.56, 0.0, 1.0, 1.0), int(geo.integers(6, 16)), 0.035)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    w = float(geo.uniform(0.08, 0.12))
    h = w * float(geo.uniform(0.6, 0.8))
    rad = house_radius(w, h)
    slots = grid_slots(
        b.rng("houses"), frame_box(side, 0.04 + rad, 0.04 + rad, 0.46 - rad, 0.96 - rad), 2 * rad, n
    )
    jit = b.rng("house_angles").uniform(-1, 1, size=6)
    aligned = bool(geo.random() < 0.7)
    for k, c in enumerate(slots):
        angle = _along_v(side) + 0.1 * float(jit[k]) if aligned else math.pi * float(jit[k])
        house(b, geo, c, w, h, angle, SOLID[roof], "building")


def _storage_tanks(a: Attrs, b: Builder) -> None:
    n, colour, side = a.i("tank_count"), a.s("tank_colour"), a.s("tank_side")
    geo = b.rng("layout")
    b.background(BARE if geo.random() < 0.5 else URBAN, 0.25)
    b.declare("road", 1, None, "center")
    b.declare("building", 0, None, OPPOSITE[side])
    b.declare("tank", n, colour, side)
    road(b, framed(side, ((0.5, -0.05), (0.5, 1.05))), 0.045, "road")
    box = frame_box(side, 0.56, 0.04, 0.96, 0.96)
    b.set_count("building", buildings_in(b, geo, box, float(geo.uniform(0.1, 0.14)), 0.6, "building"))
    r = float(geo.uniform(0.05, 0.075))
    slots = grid_slots(
        b.rng("tanks"), frame_box(side, 0.04 + r, 0.04 + r, 0.46 - r, 0.96 - r), 2 * r + 0.01, n
    )
    for c in slots:
        tank(b, geo, c, r * float(geo.uniform(0.85, 1.0)), SOLID[colour])


def _playground(a: Attrs, b: Builder) -> None:
    track, side = a.s("track_colour"), a.s("playground_side")
    n, court = a.i("court_count"), a.s("court_colour")
    geo = b.rng("layout")
    b.background(GRASS if geo.random() < 0.5 else URBAN, 0.3)
    b.declare("tree", 0, "green", "around")
    b.declare("playground", 1, track, side)
    b.declare("court", n, court, OPPOSITE[side])
    spots = scatter(b.rng("trees"), (0.0, 0.0, 1.0, 1.0), int(geo.integers(15, 35)), 0.03)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    w, h = float(geo.uniform(0.34, 0.4)), float(geo.uniform(0.2, 0.24))
    centre = framed(side, ((0.25, float(geo.uniform(0.3, 0.7))),))[0]
    angle = _along_v(side)
    b.poly(place(stadium(w, h), centre, 1.0, angle), tint(SOLID[track], geo, 10), "playground", shadow=0.006)
    b.poly(place(stadium(w - 0.06, h - 0.06), centre, 1.0, angle), tint((76, 136, 64), geo, 8), "playground")
    b.poly(place(rect(0.006, h - 0.07), centre, 1.0, angle), (220, 220, 214), "playground")
    cw, ch = 0.07, 0.12
    rad = house_radius(cw, ch)
    slots = grid_slots(
        b.rng("courts"), frame_box(side, 0.54 + rad, 0.04 + rad, 0.96 - rad, 0.96 - rad), 2 * rad, n
    )
    for c in slots:
        b.poly(place(rect(cw + 0.012, ch + 0.012), c, 1.0, angle), (222, 222, 216), "court")
        b.poly(place(rect(cw, ch), c, 1.0, angle), tint(SOLID[court], geo, 8), "court")
        b.poly(place(rect(cw, 0.004), c, 1.0, angle), (222, 222, 216), "court")


def _baseball_field(a: Attrs, b: Builder) -> None:
    n, colour, side = a.i("field_count"), a.s("field_colour"), a.s("field_side")
    geo = b.rng("layout")
    b.background(GRASS, 0.3)
    b.declare("tree", 0, "green", OPPOSITE[side])
    b.declare("baseball_field", n, colour, side)
    spots = scatter(b.rng("trees"), frame_box(side, 0.56, 0.0, 1.0, 1.0), int(geo.integers(8, 20)), 0.035)
    b.set_count("tree", len(spots))
    trees(b, geo, spots, FOLIAGE["green"], group="tree")
    radius = float(geo.uniform(0.13, 0.17))
    # A quarter-circle sector fits in a circle of 0.74 R centred half way along its bisector.
    env = 0.74 * radius
    slots = grid_slots(
        b.rng("fields"), frame_box(side, 0.04 + env, 0.04 + env, 0.46 - env, 0.96 - env), 2 * env, n
    )
    headings = b.rng("headings").uniform(0, 2 * math.pi, size=3)
    for k, (cx, cy) in enumerate(slots):
        t = float(headings[k])
        vertex = (cx - radius / 2 * math.cos(t), cy - radius / 2 * math.sin(t))
        dirt = tint(SOLID[colour], geo, 10)
        b.poly(place(pie(radius, t - math.pi / 4, math.pi / 2), vertex, 1.0, 0.0), dirt, "baseball_field")
        grass = tint((84, 140, 66), geo, 8)
        b.poly(
            place(pie(radius * 0.72, t - math.pi / 4, math.pi / 2), vertex, 1.0, 0.0), grass, "baseball_field"
        )
        diamond_at = (vertex[0] + 0.2 * radius * math.cos(t), vertex[1] + 0.2 * radius * math.sin(t))
        b.poly(
            place(rect(0.2 * radius, 0.2 * radius), diamond_at, 1.0, t + math.pi / 4), dirt, "baseball_field"
        )


DENSE_RESIDENTIAL = ClassSpec(
    "dense_residential",
    (
        ("roof_colour", (*_ROOFS, "orange")),
        ("road_count", (1, 2, 3)),
        ("tree_side", SIDES),
    ),
    _dense_residential,
)
SPARSE_RESIDENTIAL = ClassSpec(
    "sparse_residential",
    (
        ("house_count", _COUNTS),
        ("roof_colour", _ROOFS),
        ("house_side", SIDES),
    ),
    _sparse_residential,
)
STORAGE_TANKS = ClassSpec(
    "storage_tanks",
    (
        ("tank_count", _COUNTS),
        ("tank_colour", ("white", "grey", "green", "blue")),
        ("tank_side", SIDES),
    ),
    _storage_tanks,
)
PLAYGROUND = ClassSpec(
    "playground",
    (
        ("track_colour", ("red", "blue", "brown")),
        ("playground_side", SIDES),
        ("court_count", (1, 2, 3, 4)),
        ("court_colour", ("green", "blue", "red")),
    ),
    _playground,
)
BASEBALL_FIELD = ClassSpec(
    "baseball_field",
    (
        ("field_count", (1, 2, 3)),
        ("field_colour", ("brown", "red", "yellow")),
        ("field_side", SIDES),
    ),
    _baseball_field,
)
