"""Deterministic scene sampling: class, attributes and hard-negative twins per ``(seed, index)``.

Images come in families of :data:`FAMILY_SIZE` consecutive indices. Variant 0 samples every attribute of
its class uniformly and independently; variant 1 copies variant 0 and changes exactly one attribute
(a count, a colour or a side) to another value, keeping the layout streams. So each family is a pair of
images that only a model reading the stated detail can tell apart. Classes are balanced: every block of
``len(CLASSES)`` families holds each class once, in a seeded order.

Nothing here depends on ``n`` or on the worker count, only on ``(seed, index)``.
"""

from __future__ import annotations

import math

import numpy as np

from rsir.model.errors import InvalidInputError
from rsir.synthrs.classes_nature import BEACH, FARMLAND, FOREST, POND, RIVER
from rsir.synthrs.classes_transport import AIRPORT, BRIDGE, PARKING_LOT, PORT, ROUNDABOUT
from rsir.synthrs.classes_urban import (
    BASEBALL_FIELD,
    DENSE_RESIDENTIAL,
    PLAYGROUND,
    SPARSE_RESIDENTIAL,
    STORAGE_TANKS,
)
from rsir.synthrs.scene import Attr, Attrs, Builder, ClassSpec, Scene

CLASSES: tuple[ClassSpec, ...] = (
    AIRPORT,
    PARKING_LOT,
    DENSE_RESIDENTIAL,
    SPARSE_RESIDENTIAL,
    FARMLAND,
    FOREST,
    RIVER,
    POND,
    BEACH,
    BRIDGE,
    PLAYGROUND,
    STORAGE_TANKS,
    PORT,
    BASEBALL_FIELD,
    ROUNDABOUT,
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
FAMILY_SIZE = 2

# Stream ids: the third entropy word of every generator, so that streams never collide.
_CLASS_STREAM, _ATTR_STREAM, _SPLIT_STREAM = 0, 1, 6


def family_of(index: int) -> tuple[int, int]:
    """``(family, variant)`` of an image index."""
    return divmod(index, FAMILY_SIZE)


def class_of(seed: int, family: int) -> ClassSpec:
    block, slot = divmod(family, len(CLASSES))
    order = np.random.default_rng([seed, block, _CLASS_STREAM]).permutation(len(CLASSES))
    return CLASSES[int(order[slot])]


def sample_attributes(spec: ClassSpec, seed: int, family: int, variant: int) -> dict[str, Attr]:
    """Independent uniform draw per attribute; variant 1 then changes one attribute to a new value."""
    rng = np.random.default_rng([seed, family, _ATTR_STREAM])
    values: dict[str, Attr] = {}
    for name, domain in spec.domains:
        values[name] = domain[int(rng.integers(len(domain)))]
    if variant:
        # A colour of objects that are absent (count 0) changes nothing visible: never mutate it.
        live = [(k, d) for k, d in spec.domains if values.get(k.rsplit("_", 1)[0] + "_count") != 0]
        name, domain = live[int(rng.integers(len(live)))]
        others = [v for v in domain if v != values[name]]
        values[name] = others[int(rng.integers(len(others)))]
    return values


def make_scene(seed: int, index: int) -> Scene:
    """The scene of image ``index`` of the dataset with ``seed``; both must be ``>= 0``."""
    if seed < 0 or index < 0:
        raise InvalidInputError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    family, variant = family_of(index)
    spec = class_of(seed, family)
    values = sample_attributes(spec, seed, family, variant)
    builder = Builder(seed, family)
    spec.build(Attrs(values), builder)
    prims, groups, relations = builder.finish()
    return Scene(
        seed=seed,
        index=index,
        family=family,
        variant=variant,
        cls=spec.name,
        attributes=tuple(values.items()),
        background=builder.bg,
        prims=prims,
        groups=groups,
        relations=relations,
    )


def split_of(seed: int, index: int, fractions: tuple[float, float, float]) -> str:
    """``train``/``val``/``test`` for an image; both twins of a family share a split.

    Families are spread by a golden-ratio (Weyl) sequence, which fills ``[0, 1)`` almost evenly for every
    prefix, so split sizes are within a few images of ``fractions * n`` for any ``n``.
    """
    train, val, _ = fractions
    offset = float(np.random.default_rng([seed, _SPLIT_STREAM]).random())
    u = (family_of(index)[0] * _GOLDEN + offset) % 1.0
    if u < train:
        return "train"
    return "val" if u < train + val else "test"


_GOLDEN = (math.sqrt(5) - 1) / 2
