"""Phrase builders that turn a scene's groups into caption fragments, recording which facts they state.

Every fragment is built from the scene's :class:`~rsir.synthrs.scene.Group` data, never from the class's
sampled attributes, so that a caption can only state what the scene description says. A
:class:`Phraser` also records which kinds of fact (``count``, ``colour``, ``pos``, ``rel``) the current
sentence states, so that the caption picker can make sure the five captions cover the hard-negative
details.
"""

from __future__ import annotations

import numpy as np

from rsir.synthrs.scene import Group, Scene
from rsir.synthrs.vocab import number_word

# (singular, plural) synonyms per object type. Uncountable scene words ("airport", "forest") are written
# into templates directly and never carry a number or a colour.
NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "plane": (("plane", "planes"), ("airplane", "airplanes")),
    "terminal": (("terminal building", "terminal buildings"), ("terminal", "terminals")),
    "runway": (("runway", "runways"),),
    "car": (("car", "cars"),),
    "parking_lot": (("parking lot", "parking lots"),),
    "tree": (("tree", "trees"),),
    "building": (("building", "buildings"), ("house", "houses")),
    "road": (("road", "roads"),),
    "field": (("field", "fields"), ("crop field", "crop fields")),
    "river": (("river", "rivers"),),
    "boat": (("boat", "boats"),),
    "pond": (("pond", "ponds"), ("lake", "lakes")),
    "sea": (("sea", "seas"), ("ocean", "oceans")),
    "beach": (("beach", "beaches"),),
    "bridge": (("bridge", "bridges"),),
    "playground": (("playground", "playgrounds"),),
    "court": (
        ("tennis court", "tennis courts"),
        ("court", "courts"),
        ("basketball court", "basketball courts"),
    ),
    "tank": (("storage tank", "storage tanks"), ("tank", "tanks"), ("oil tank", "oil tanks")),
    "ship": (("ship", "ships"), ("vessel", "vessels")),
    "pier": (("pier", "piers"), ("dock", "docks")),
    "baseball_field": (("baseball field", "baseball fields"), ("baseball diamond", "baseball diamonds")),
    "roundabout": (("roundabout", "roundabouts"),),
    "island": (("central island", "central islands"), ("island", "islands")),
}

_SIDE_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "on the left side", "in the left part"),
    "right": ("on the right", "on the right side", "in the right part"),
    "top": ("at the top", "in the upper part", "on the top side"),
    "bottom": ("at the bottom", "in the lower part", "on the bottom side"),
    "center": ("in the middle", "in the center"),
}
_REL_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("on the left of", "to the left of", "on the left side of"),
    "right of": ("on the right of", "to the right of", "on the right side of"),
}


class Phraser:
    """Fragment factory for one scene; ``rng`` picks among paraphrases."""

    def __init__(self, scene: Scene, rng: np.random.Generator) -> None:
        self.scene = scene
        self.rng = rng
        self.tags: set[str] = set()

    def has(self, type_: str) -> bool:
        return self.scene.group(type_) is not None

    def g(self, type_: str) -> Group:
        group = self.scene.group(type_)
        if group is None:
            raise KeyError(f"scene {self.scene.cls} has no {type_}")
        return group

    def pick(self, *options: str) -> str:
        return options[int(self.rng.integers(len(options)))]

    def noun(self, type_: str, plural: bool | None = None) -> str:
        """A synonym of ``type_``; plural follows the group's count unless given."""
        if plural is None:
            plural = self.g(type_).count != 1
        sing, plur = NOUNS[type_][int(self.rng.integers(len(NOUNS[type_])))]
        return plur if plural else sing

    def colour(self, type_: str) -> str:
        """The group's colour word (tags the sentence as stating a colour)."""
        colour = self.g(type_).colour
        if colour is None:
            raise KeyError(f"{type_} has no colour")
        self.tags.add("colour")
        return colour

    def np(self, type_: str, count: str = "exact", colour: bool = False) -> str:
        """Noun phrase: ``count`` is ``exact`` ("three planes"), ``vague`` ("several planes") or ``the``."""
        n = self.g(type_).count
        words: list[str] = []
        if count == "exact":
            self.tags.add("count")
            words.append(self.pick("a", "one") if n == 1 else number_word(n))
        elif count == "vague":
            words.append("a" if n == 1 else self._vague(n))
        else:
            words.append("the")
        if colour:
            words.append(self.colour(type_))
        words.append(self.noun(type_))
        if words[0] == "a" and words[1][0] in "aeiou":
            words[0] = "an"
        return " ".join(words)

    def be(self, type_: str) -> str:
        return "is" if self.g(type_).count == 1 else "are"

    def verb(self, type_: str, singular: str, plural: str) -> str:
        return singular if self.g(type_).count == 1 else plural

    def pos(self, type_: str) -> str:
        """Absolute position phrase ("on the left side") of a sided or centred group."""
        self.tags.add("pos")
        return self.pick(*_SIDE_PHRASES[self.g(type_).position])

    def rel(self, subject: str, obj: str) -> str | None:
        """``on the left of the road``-style phrase when a horizontal relation holds, else ``None``."""
        relation = self.scene.relation(subject, obj)
        if relation is None:
            return None
        self.tags.add("rel")
        return f"{self.pick(*_REL_PHRASES[relation])} the {self.noun(obj)}"

    def rel_or_pos(self, subject: str, obj: str) -> str:
        return self.rel(subject, obj) or self.pos(subject)

    def _vague(self, n: int) -> str:
        if n == 2:
            return self.pick("some", "a couple of")
        if n <= 5:
            return self.pick("some", "several", "a few")
        return self.pick("many", "lots of", "a lot of", "several")
