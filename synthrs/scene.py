"""Scene description of SynthRS: drawing primitives plus the semantic facts that captions may state.

A :class:`Scene` carries two views of one picture. ``prims`` is what :mod:`rsir.synthrs.render` draws, in
normalised coordinates. ``groups`` and ``relations`` are what captions are allowed to say; they are
derived from the primitives themselves (bounding boxes), so a stated position is true of the pixels.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rsir.synthrs.vocab import RGB, Box

Pt = tuple[float, float]
Attr = int | str
PrimKind = Literal["poly", "line", "circle"]
_EPS = 1e-6


@dataclass(frozen=True)
class Prim:
    """One filled shape. ``poly``: polygon ``pts``; ``line``: polyline ``pts`` of thickness ``width``;
    ``circle``: centre ``pts[0]`` and radius ``width``. ``shadow`` is a normalised offset (0: none)."""

    kind: PrimKind
    pts: tuple[Pt, ...]
    colour: RGB
    width: float = 0.0
    shadow: float = 0.0


@dataclass(frozen=True)
class Group:
    """All instances of one object type in a scene (types are unique per scene).

    ``position`` is one of left/right/top/bottom/center (checked against ``bbox``) or ``around``
    (spread over the image, never stated as a side). ``colour`` is ``None`` for uncoloured things.
    """

    type: str
    count: int
    colour: str | None
    position: str
    bbox: Box


@dataclass(frozen=True)
class Relation:
    """Image-plane relation between two groups: ``left of``, ``right of``, ``above``, ``below``."""

    subject: str
    relation: str
    object: str


@dataclass(frozen=True)
class Background:
    """Ground under every primitive: base colour and texture roughness (relative amplitude, 0..1)."""

    colour: RGB
    roughness: float = 0.25


@dataclass(frozen=True)
class Scene:
    """A sampled scene; ``family``/``variant`` link hard-negative twins (same family, one attribute apart)."""

    seed: int
    index: int
    family: int
    variant: int
    cls: str
    attributes: tuple[tuple[str, Attr], ...]
    background: Background
    prims: tuple[Prim, ...]
    groups: tuple[Group, ...]
    relations: tuple[Relation, ...]

    def group(self, type_: str) -> Group | None:
        """The group of ``type_``, or ``None`` when the scene has none."""
        return next((g for g in self.groups if g.type == type_), None)

    def relation(self, subject: str, obj: str) -> str | None:
        """Horizontal relation (``left of``/``right of``) of ``subject`` to ``obj``, if one holds."""
        for r in self.relations:
            if r.subject == subject and r.object == obj and r.relation in ("left of", "right of"):
                return r.relation
        return None

    def to_json(self) -> dict[str, Any]:
        """The JSON-serialisable description stored in ``dataset.json`` (no drawing primitives)."""
        return {
            "class": self.cls,
            "family": self.family,
            "variant": self.variant,
            "attributes": dict(self.attributes),
            "objects": [
                {
                    "type": g.type,
                    "count": g.count,
                    "colour": g.colour,
                    "position": g.position,
                    "bbox": [round(v, 3) for v in g.bbox],
                }
                for g in self.groups
            ],
            "relations": [
                {"subject": r.subject, "relation": r.relation, "object": r.object} for r in self.relations
            ],
        }


class Attrs:
    """Typed read access to a class's sampled attribute values."""

    def __init__(self, values: Mapping[str, Attr]) -> None:
        self._values = dict(values)

    def i(self, key: str) -> int:
        value = self._values[key]
        assert isinstance(value, int)
        return value

    def s(self, key: str) -> str:
        value = self._values[key]
        assert isinstance(value, str)
        return value


@dataclass(frozen=True)
class ClassSpec:
    """A scene class: attribute domains (sampled uniformly and independently) and a layout function."""

    name: str
    domains: tuple[tuple[str, tuple[Attr, ...]], ...]
    build: Callable[[Attrs, Builder], None]


@dataclass
class _Pending:
    count: int
    colour: str | None
    position: str
    boxes: list[Box] = field(default_factory=list)


class Builder:
    """Collects primitives and groups while a class's layout function runs.

    Randomness comes from :meth:`rng`, one independent stream per tag, so that twins which differ in one
    attribute (e.g. a count) still share every other part of the layout draw for draw.
    """

    def __init__(self, seed: int, family: int) -> None:
        self._seed = seed
        self._family = family
        self._prims: list[Prim] = []
        self._groups: dict[str, _Pending] = {}
        self.bg = Background((110, 110, 100))

    def rng(self, tag: str) -> np.random.Generator:
        return np.random.default_rng([self._seed, self._family, 2, zlib.crc32(tag.encode())])

    def background(self, colour: RGB, roughness: float = 0.25) -> None:
        self.bg = Background(colour, roughness)

    def declare(self, type_: str, count: int, colour: str | None, position: str) -> None:
        """Register a caption-visible group; its primitives are added with ``group=type_``."""
        if type_ in self._groups:
            raise ValueError(f"group {type_!r} declared twice")
        self._groups[type_] = _Pending(count, colour, position)

    def set_count(self, type_: str, count: int) -> None:
        """Fix a group's count once its parts are drawn (for groups filled by a probabilistic grid)."""
        self._groups[type_].count = count

    def add(self, prim: Prim, group: str | None = None) -> None:
        self._prims.append(prim)
        if group is not None:
            self._groups[group].boxes.append(_prim_box(prim))

    def poly(self, pts: tuple[Pt, ...], colour: RGB, group: str | None = None, shadow: float = 0.0) -> None:
        self.add(Prim("poly", pts, colour, 0.0, shadow), group)

    def line(self, pts: tuple[Pt, ...], colour: RGB, width: float, group: str | None = None) -> None:
        self.add(Prim("line", pts, colour, width), group)

    def circle(self, c: Pt, r: float, colour: RGB, group: str | None = None, shadow: float = 0.0) -> None:
        self.add(Prim("circle", (c,), colour, r, shadow), group)

    def finish(self) -> tuple[tuple[Prim, ...], tuple[Group, ...], tuple[Relation, ...]]:
        """Freeze primitives, attach bounding boxes to groups, derive relations; checks stated sides."""
        groups: list[Group] = []
        for type_, p in self._groups.items():
            if not p.boxes:
                if p.count == 0:  # an optional group that ended up empty is simply absent
                    continue
                raise ValueError(f"group {type_!r} has no primitives")
            box = (
                max(0.0, min(b[0] for b in p.boxes)),
                max(0.0, min(b[1] for b in p.boxes)),
                min(1.0, max(b[2] for b in p.boxes)),
                min(1.0, max(b[3] for b in p.boxes)),
            )
            if not _position_holds(p.position, box):
                raise ValueError(f"group {type_!r} declared {p.position} but spans {box}")
            groups.append(Group(type_, p.count, p.colour, p.position, box))
        return tuple(self._prims), tuple(groups), _relations(groups)


def _prim_box(p: Prim) -> Box:
    xs = [x for x, _ in p.pts]
    ys = [y for _, y in p.pts]
    pad = p.width if p.kind == "circle" else p.width / 2
    return (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad)


def _position_holds(position: str, b: Box) -> bool:
    if position == "left":
        return b[2] <= 0.5 + _EPS
    if position == "right":
        return b[0] >= 0.5 - _EPS
    if position == "top":
        return b[3] <= 0.5 + _EPS
    if position == "bottom":
        return b[1] >= 0.5 - _EPS
    if position == "center":
        return 0.3 <= (b[0] + b[2]) / 2 <= 0.7 and 0.3 <= (b[1] + b[3]) / 2 <= 0.7
    return position == "around"


def _relations(groups: list[Group]) -> tuple[Relation, ...]:
    # Spread-out groups ("around") have no meaningful side relative to anything.
    placed = [g for g in groups if g.position != "around"]
    out: list[Relation] = []
    for a in placed:
        for b in placed:
            if a is b:
                continue
            if a.bbox[2] <= b.bbox[0] + _EPS:
                out.append(Relation(a.type, "left of", b.type))
            elif a.bbox[0] >= b.bbox[2] - _EPS:
                out.append(Relation(a.type, "right of", b.type))
            if a.bbox[3] <= b.bbox[1] + _EPS:
                out.append(Relation(a.type, "above", b.type))
            elif a.bbox[1] >= b.bbox[3] - _EPS:
                out.append(Relation(a.type, "below", b.type))
    return tuple(out)
