"""Five RSICD-style captions per scene: lower case, plain vocabulary, `` .`` at the end.

Each class has a list of templates written in the style of RSICD (not copied from it). A template gets a
:class:`~rsir.synthrs.phrases.Phraser` and returns a sentence, or ``None`` when the scene lacks what it
talks about (e.g. boats). The five captions are then picked so that at least two state exact counts,
one a colour and one a position, when the scene has such facts: these are the details that tell the
twins of a family apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rsir.synthrs.phrases import Phraser
from rsir.synthrs.scene import Scene

Template = Callable[[Phraser], str | None]
N_CAPTIONS = 5
_CAPTION_STREAM = 5
_NEEDS = (("count",), ("count",), ("colour",), ("pos", "rel"))

_AIRPORT: tuple[Template, ...] = (
    lambda p: f"{p.np('plane', colour=True)} {p.be('plane')} parked {p.pos('plane')} of an airport",
    lambda p: f"{p.np('plane')} {p.be('plane')} parked next to a terminal building",
    lambda p: f"there {p.be('plane')} {p.np('plane', colour=True)} in the airport",
    lambda p: f"{p.np('plane', 'vague', True)} {p.be('plane')} {p.rel_or_pos('plane', 'terminal')}",
    lambda p: f"an airport with {p.np('plane', colour=True)} and a long runway",
    lambda p: (
        f"{p.np('plane')} {p.be('plane')} {p.pick('stopped', 'parked')} near a runway and a large terminal"
    ),
    lambda p: f"a long runway is {p.pos('runway')} and {p.np('plane')} {p.be('plane')} {p.pos('plane')}",
)
_PARKING_LOT: tuple[Template, ...] = (
    lambda p: f"a parking lot where {p.np('car', colour=True)} {p.be('car')} parked {p.pos('car')}",
    lambda p: f"there {p.be('car')} {p.np('car', colour=True)} in the parking lot",
    lambda p: f"a {p.pick('large', 'big')} parking lot with {p.np('car')} {p.pos('car')}",
    lambda p: f"{p.np('car', 'vague', True)} {p.be('car')} parked in a parking lot surrounded by green trees",
    lambda p: f"many green trees are around a parking lot with {p.np('car', colour=True)}",
    lambda p: f"a parking lot with {p.np('car', colour=True)} parked {p.pos('car')}",
    lambda p: f"{p.np('car')} {p.be('car')} in an almost empty parking lot",
)
_DENSE: tuple[Template, ...] = (
    lambda p: (
        f"many {p.noun('building', True)} with {p.colour('building')} roofs are in a dense residential area"
    ),
    lambda p: f"a dense residential area with {p.np('road')} and many {p.colour('building')} houses",
    lambda p: f"{p.np('tree', 'vague', True)} are {p.pos('tree')} of a dense residential area",
    lambda p: (
        f"{p.np('road')} {p.verb('road', 'crosses', 'cross')} a residential area "
        f"with {p.colour('building')} roofs"
    ),
    lambda p: (
        f"lots of houses with {p.colour('building')} roofs are arranged neatly "
        f"and many trees are {p.pos('tree')}"
    ),
    lambda p: f"many {p.colour('building')} buildings are densely arranged along {p.np('road')}",
    lambda p: f"this crowded residential area has {p.np('road')} and many buildings",
)
_SPARSE: tuple[Template, ...] = (
    lambda p: f"{p.np('building', colour=True)} {p.be('building')} {p.rel_or_pos('building', 'road')}",
    lambda p: (
        f"{p.np('building')} with {p.colour('building')} {p.verb('building', 'roof', 'roofs')} "
        f"{p.be('building')} {p.pos('building')}"
    ),
    lambda p: f"a sparse residential area with {p.np('building', colour=True)} and some green trees",
    lambda p: f"some trees are {p.pos('tree')} and {p.np('building')} {p.be('building')} {p.pos('building')}",
    lambda p: (
        f"there {p.be('building')} {p.np('building', colour=True)} beside a road in a sparse residential area"
    ),
    lambda p: (
        f"{p.np('building', 'vague', True)} {p.be('building')} near a straight road with some green trees"
    ),
    lambda p: f"a road passes by {p.np('building', colour=True)} and a few trees",
)
_FARMLAND: tuple[Template, ...] = (
    lambda p: f"{p.np('field', colour=True)} are next to a road",
    lambda p: f"the farmland is divided into {p.np('field')}",
    lambda p: f"{p.np('field', colour=True)} are arranged neatly and a road is {p.pos('road')}",
    lambda p: f"a road is {p.rel_or_pos('road', 'field')}",
    lambda p: f"there are {p.np('field', colour=True)} in this farmland",
    lambda p: f"{p.np('field', 'vague', True)} are beside a road {p.pos('road')}",
    lambda p: f"a piece of farmland with {p.np('field')} and a straight road beside them",
)
_FOREST: tuple[Template, ...] = (
    lambda p: f"a dense forest with many {p.colour('tree')} trees",
    lambda p: f"many {p.colour('tree')} trees are in a piece of forest",
    lambda p: f"a curved road is {p.pos('road')} of a dense forest",
    lambda p: (
        f"{p.np('building')} {p.be('building')} {p.pos('building')} of the forest"
        if p.has("building")
        else None
    ),
    lambda p: (
        f"many {p.colour('tree')} trees surround {p.np('building')} and a road" if p.has("building") else None
    ),
    lambda p: f"lots of {p.colour('tree')} trees grow densely and a narrow road passes {p.pos('road')}",
    lambda p: f"a narrow road runs through many {p.colour('tree')} trees",
    lambda p: (
        f"there {p.be('building')} {p.np('building')} in a forest of {p.colour('tree')} trees"
        if p.has("building")
        else None
    ),
)
_RIVER: tuple[Template, ...] = (
    lambda p: f"a {p.colour('river')} river is {p.rel_or_pos('river', 'road')}",
    lambda p: f"a {p.colour('river')} river flows {p.pos('river')} and a road is {p.pos('road')}",
    lambda p: f"many green trees are on both sides of a curved {p.colour('river')} river",
    lambda p: (
        f"{p.np('boat', colour=True)} {p.be('boat')} in a river {p.rel_or_pos('river', 'road')}"
        if p.has("boat")
        else None
    ),
    lambda p: f"a road is {p.rel_or_pos('road', 'river')} with some buildings beside it",
    lambda p: f"some buildings are {p.rel_or_pos('building', 'road')}",
    lambda p: (
        f"there {p.be('boat')} {p.np('boat')} in the {p.colour('river')} river" if p.has("boat") else None
    ),
    lambda p: "a curved river flows beside a straight road and many green trees",
)
_POND: tuple[Template, ...] = (
    lambda p: f"{p.np('pond', colour=True)} {p.be('pond')} {p.pos('pond')}",
    lambda p: f"many green trees are around {p.np('pond', colour=True)}",
    lambda p: f"there {p.be('pond')} {p.np('pond')} {p.pos('pond')} of the grassland",
    lambda p: f"{p.np('pond', colour=True)} surrounded by {p.np('tree', 'vague')}",
    lambda p: f"{p.np('pond', 'vague', True)} {p.be('pond')} {p.pos('pond')} with some trees nearby",
    lambda p: f"a park with {p.np('pond')} and many trees",
)
_BEACH: tuple[Template, ...] = (
    lambda p: f"a {p.colour('beach')} beach is next to the {p.colour('sea')} {p.noun('sea')}",
    lambda p: f"the {p.colour('sea')} sea is {p.pos('sea')} and many green trees are {p.pos('tree')}",
    lambda p: f"waves roll onto a {p.colour('beach')} beach",
    lambda p: (
        f"{p.np('boat', colour=True)} {p.be('boat')} in the sea near a {p.colour('beach')} beach"
        if p.has("boat")
        else None
    ),
    lambda p: f"a long {p.colour('beach')} beach lies between the sea and many green trees",
    lambda p: f"the {p.colour('sea')} {p.noun('sea')} is {p.pos('sea')}",
    lambda p: f"some green trees are near a {p.colour('beach')} beach",
    lambda p: f"there {p.be('boat')} {p.np('boat')} on the {p.colour('sea')} sea" if p.has("boat") else None,
)
_BRIDGE: tuple[Template, ...] = (
    lambda p: f"{p.np('bridge', colour=True)} {p.be('bridge')} over a {p.colour('river')} river",
    lambda p: f"a {p.colour('river')} river with {p.np('bridge')} over it",
    lambda p: (
        f"{p.np('bridge', colour=True)} {p.verb('bridge', 'crosses', 'cross')} a river "
        "with green trees on both sides"
    ),
    lambda p: f"there {p.be('bridge')} {p.np('bridge')} across the {p.colour('river')} river",
    lambda p: (
        f"{p.np('road')} {p.verb('road', 'crosses', 'cross')} the river on {p.np('bridge', colour=True)}"
    ),
    lambda p: (
        f"many green trees are on both sides of a {p.colour('river')} river with {p.np('bridge', 'vague')}"
    ),
)
_PLAYGROUND: tuple[Template, ...] = (
    lambda p: f"a playground with a {p.colour('playground')} running track is {p.pos('playground')}",
    lambda p: f"{p.np('court', colour=True)} {p.be('court')} {p.rel_or_pos('court', 'playground')}",
    lambda p: f"a {p.colour('playground')} playground is next to {p.np('court')}",
    lambda p: f"a playground and {p.np('court', colour=True)} are surrounded by many green trees",
    lambda p: (
        f"there {p.be('court')} {p.np('court')} beside a playground with a {p.colour('playground')} track"
    ),
    lambda p: f"many green trees are around a {p.colour('playground')} playground",
    lambda p: f"a {p.colour('playground')} running track surrounds a football field",
)
_BASEBALL: tuple[Template, ...] = (
    lambda p: f"{p.np('baseball_field', colour=True)} {p.be('baseball_field')} {p.pos('baseball_field')}",
    lambda p: f"{p.np('baseball_field')} {p.be('baseball_field')} near many green trees",
    lambda p: f"there {p.be('baseball_field')} {p.np('baseball_field', colour=True)} on the grassland",
    lambda p: (
        f"some trees are {p.pos('tree')} and {p.np('baseball_field')} {p.be('baseball_field')} "
        f"{p.pos('baseball_field')}"
    ),
    lambda p: f"{p.np('baseball_field', colour=True)} {p.be('baseball_field')} next to some green trees",
    lambda p: f"{p.np('baseball_field', 'vague', True)} {p.be('baseball_field')} {p.pos('baseball_field')}",
)
_TANKS: tuple[Template, ...] = (
    lambda p: f"{p.np('tank', colour=True)} {p.be('tank')} {p.rel_or_pos('tank', 'road')}",
    lambda p: f"there {p.be('tank')} {p.np('tank', colour=True)} in an industrial area",
    lambda p: f"{p.np('tank')} {p.be('tank')} {p.pos('tank')} and some buildings are {p.pos('building')}",
    lambda p: f"{p.np('tank', 'vague', True)} {p.be('tank')} next to a road",
    lambda p: f"an industrial area with {p.np('tank', colour=True)} beside a road",
    lambda p: f"a road separates {p.np('tank')} from some factory buildings",
)
_PORT: tuple[Template, ...] = (
    lambda p: f"{p.np('ship', colour=True)} {p.be('ship')} docked {p.pos('ship')} of a port",
    lambda p: f"{p.np('ship', colour=True)} {p.be('ship')} in the {p.colour('sea')} sea next to a pier",
    lambda p: f"there {p.be('ship')} {p.np('ship')} {p.rel_or_pos('ship', 'pier')}",
    lambda p: f"many buildings are near a harbor with {p.np('ship', colour=True)}",
    lambda p: f"{p.np('ship', 'vague', True)} {p.be('ship')} anchored in a harbor",
    lambda p: f"a port with {p.np('ship', colour=True)} and a long pier",
    lambda p: f"the sea is {p.pos('sea')} and {p.np('ship')} {p.be('ship')} in it",
)
_ROUNDABOUT: tuple[Template, ...] = (
    lambda p: f"{p.np('road')} meet at a roundabout",
    lambda p: f"a roundabout with a {p.colour('island')} central island connects {p.np('road')}",
    lambda p: f"{p.np('car', colour=True)} {p.be('car')} driving on a roundabout" if p.has("car") else None,
    lambda p: f"a roundabout with a {p.colour('island')} island {p.pos('island')}",
    lambda p: f"many green trees are around a roundabout with {p.np('road')}",
    lambda p: (
        f"there {p.be('car')} {p.np('car')} on the roundabout and {p.np('road')} around it"
        if p.has("car")
        else None
    ),
    lambda p: f"{p.np('road')} lead to a roundabout around a {p.colour('island')} island",
)

TEMPLATES: dict[str, tuple[Template, ...]] = {
    "airport": _AIRPORT,
    "parking_lot": _PARKING_LOT,
    "dense_residential": _DENSE,
    "sparse_residential": _SPARSE,
    "farmland": _FARMLAND,
    "forest": _FOREST,
    "river": _RIVER,
    "pond": _POND,
    "beach": _BEACH,
    "bridge": _BRIDGE,
    "playground": _PLAYGROUND,
    "storage_tanks": _TANKS,
    "port": _PORT,
    "baseball_field": _BASEBALL,
    "roundabout": _ROUNDABOUT,
}


def captions_for(scene: Scene, seed: int, index: int) -> list[str]:
    """Exactly five distinct captions, each true of ``scene``; deterministic per ``(seed, index)``."""
    rng = np.random.default_rng([seed, index, _CAPTION_STREAM])
    phraser = Phraser(scene, rng)
    candidates: dict[str, tuple[frozenset[str], int]] = {}
    # Paraphrase picks are random, so a second pass over the templates yields new wordings if needed.
    for _ in range(8):
        for k, template in enumerate(TEMPLATES[scene.cls]):
            phraser.tags = set()
            text = template(phraser)
            if text is not None:
                candidates.setdefault(_finish(text), (frozenset(phraser.tags), k))
        if len({k for _, k in candidates.values()}) >= N_CAPTIONS:
            break
    if len(candidates) < N_CAPTIONS:
        raise RuntimeError(f"class {scene.cls} produced only {len(candidates)} distinct captions")
    return _choose([(text, tags, k) for text, (tags, k) in candidates.items()], rng)


def _choose(candidates: list[tuple[str, frozenset[str], int]], rng: np.random.Generator) -> list[str]:
    """Cover :data:`_NEEDS` first, preferring captions from templates not used yet, then fill up."""
    pool = [candidates[int(i)] for i in rng.permutation(len(candidates))]
    chosen: list[str] = []
    used: set[int] = set()

    def take(text: str, k: int) -> None:
        chosen.append(text)
        used.add(k)

    for need in _NEEDS:
        fits = [(text, k) for text, tags, k in pool if text not in chosen and tags.intersection(need)]
        fresh = [c for c in fits if c[1] not in used]
        if fresh or fits:
            take(*(fresh or fits)[0])
    for fresh_only in (True, False):
        for text, _, k in pool:
            if len(chosen) < N_CAPTIONS and text not in chosen and (k not in used or not fresh_only):
                take(text, k)
    return [chosen[int(i)] for i in rng.permutation(N_CAPTIONS)]


def _finish(text: str) -> str:
    return " ".join(text.lower().split()) + " ."
