"""Which SynthRS scenes a caption is true of, judged from the scene JSON alone.

An independent truth checker: it knows English object nouns, number words, vague quantifiers, colour
words and position words, but nothing about the generator's templates. It finds every object noun in a
caption, reads the number, quantifier and colour words in front of it, and checks them (and the noun's
grammatical number) against the scene's ``objects``; it checks every position word against the nearest
object noun before it, either as an absolute side or, when followed by "of the <object>", as a relation
in the scene's ``relations``.

A caption is parsed once (:func:`parse_caption`) and its claims checked against any number of scenes
(:func:`problems_in`), so that the benchmark analysis can ask, for every caption of a split, which of
the split's images it is true of. The tests use it to check that every caption is true of its own scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError

# surface form -> (object type, plural?)
_NOUN_FORMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "plane": ("plane", ("plane", "planes", "airplane", "airplanes", "aircraft")),
    "terminal": ("terminal", ("terminal", "terminals", "terminal building", "terminal buildings")),
    "runway": ("runway", ("runway", "runways")),
    "car": ("car", ("car", "cars", "vehicle", "vehicles")),
    "parking_lot": ("parking_lot", ("parking lot", "parking lots")),
    "tree": ("tree", ("tree", "trees")),
    "building": ("building", ("building", "buildings", "house", "houses", "roof", "roofs")),
    "road": ("road", ("road", "roads")),
    "field": ("field", ("field", "fields", "crop field", "crop fields")),
    "river": ("river", ("river", "rivers")),
    "boat": ("boat", ("boat", "boats")),
    "pond": ("pond", ("pond", "ponds", "lake", "lakes")),
    "sea": ("sea", ("sea", "seas", "ocean", "oceans")),
    "beach": ("beach", ("beach", "beaches")),
    "bridge": ("bridge", ("bridge", "bridges")),
    "playground": (
        "playground",
        ("playground", "playgrounds", "running track", "running tracks", "track", "tracks", "football field"),
    ),
    "court": (
        "court",
        ("court", "courts", "tennis court", "tennis courts", "basketball court", "basketball courts"),
    ),
    "tank": ("tank", ("tank", "tanks", "storage tank", "storage tanks", "oil tank", "oil tanks")),
    "ship": ("ship", ("ship", "ships", "vessel", "vessels")),
    "pier": ("pier", ("pier", "piers", "dock", "docks")),
    "baseball_field": (
        "baseball_field",
        ("baseball field", "baseball fields", "baseball diamond", "baseball diamonds"),
    ),
    "roundabout": ("roundabout", ("roundabout", "roundabouts")),
    "island": ("island", ("island", "islands", "central island", "central islands")),
}
_PLURAL_ENDINGS = ("s",)
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
NUMBERS |= {"nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
COLOURS = {
    "red",
    "grey",
    "gray",
    "white",
    "blue",
    "green",
    "yellow",
    "brown",
    "black",
    "orange",
    "purple",
    "pink",
}
_ADJECTIVES = {
    "small",
    "large",
    "big",
    "long",
    "little",
    "tiny",
    "huge",
    "round",
    "circular",
    "rectangular",
    "square",
    "narrow",
    "wide",
    "curved",
    "straight",
    "dense",
    "sparse",
    "tall",
    "parked",
    "dark",
    "light",
}
_POSITIONS = {
    "left": "left",
    "right": "right",
    "top": "top",
    "upper": "top",
    "bottom": "bottom",
    "lower": "bottom",
    "middle": "center",
    "center": "center",
}


def _lexicon() -> dict[tuple[str, ...], tuple[str, bool]]:
    out: dict[tuple[str, ...], tuple[str, bool]] = {}
    for type_, forms in _NOUN_FORMS.values():
        for form in forms:
            words = tuple(form.split())
            plural = words[-1].endswith(_PLURAL_ENDINGS) and not words[-1].endswith("ss")
            out[words] = (type_, plural)
    return out


_LEXICON = _lexicon()
_MAX_WORDS = max(len(k) for k in _LEXICON)


# Vague quantifiers, read backwards from the noun: words -> the counts they are true of. English
# semantics, not the generator's ("some" is any plural amount, "many" six or more), and loose where
# English is: "a few" is read as "some", since one of the generator's fixed phrases says "a few trees"
# of sparse residential areas, which have 6 to 15.
_VAGUE: dict[tuple[str, ...], tuple[int, int]] = {
    ("a", "couple", "of"): (2, 2),
    ("a", "few"): (2, 10**9),
    ("some",): (2, 10**9),
    ("several",): (3, 10**9),
    ("many",): (6, 10**9),
    ("lots", "of"): (6, 10**9),
    ("a", "lot", "of"): (6, 10**9),
}
_MAX_VAGUE = max(len(k) for k in _VAGUE)


@dataclass(frozen=True)
class Mention:
    """An object noun and the words in front of it that state facts about its group."""

    type: str
    noun: str
    plural: bool
    numbers: tuple[str, ...]
    colours: tuple[str, ...]
    vague: tuple[str, tuple[int, int]] | None


@dataclass(frozen=True)
class Position:
    """A position word: the side of ``subject`` (``relation_to`` None) or its relation to another object."""

    word: str
    side: str
    subject: str | None
    relation_to: str | None


@dataclass(frozen=True)
class Claims:
    """What a caption states, and the problems that need no scene (form, stray number or colour words)."""

    mentions: tuple[Mention, ...]
    positions: tuple[Position, ...]
    form_problems: tuple[str, ...]


def parse_caption(caption: str) -> Claims:
    """The facts ``caption`` states, to be checked against scenes with :func:`problems_in`."""
    form: list[str] = []
    if caption != caption.lower() or not caption.endswith(" ."):
        form.append("not lower case or no final ' .'")
    tokens = caption.removesuffix(" .").split()
    spans = _mentions(tokens)
    mentions: list[Mention] = []
    consumed: set[int] = set()
    for start, end, type_, plural in spans:
        k = start - 1
        numbers: list[str] = []
        colours: list[str] = []
        while k >= 0 and (tokens[k] in NUMBERS or tokens[k] in COLOURS or tokens[k] in _ADJECTIVES):
            consumed.add(k)
            (numbers if tokens[k] in NUMBERS else colours if tokens[k] in COLOURS else []).append(tokens[k])
            k -= 1
        vague = None
        for size in range(_MAX_VAGUE, 0, -1):
            words = tuple(tokens[max(0, k + 1 - size) : k + 1])
            if len(words) == size and words in _VAGUE:
                vague = (" ".join(words), _VAGUE[words])
                break
        noun = " ".join(tokens[start:end])
        mentions.append(Mention(type_, noun, plural, tuple(numbers), tuple(colours), vague))
    for k, word in enumerate(tokens):
        if (word in NUMBERS or word in COLOURS) and k not in consumed:
            form.append(f"{word!r} at word {k} describes no object noun")
    positions = tuple(_position(tokens, k, spans) for k, word in enumerate(tokens) if word in _POSITIONS)
    return Claims(tuple(mentions), positions, tuple(form))


def problems_in(claims: Claims, scene: dict[str, Any]) -> list[str]:
    """Problems of the parsed caption against the scene JSON ``scene``; empty when every fact holds."""
    problems = list(claims.form_problems)
    objects = {o["type"]: o for o in scene["objects"]}
    for m in claims.mentions:
        obj = objects.get(m.type)
        if obj is None:
            problems.append(f"mentions {m.noun!r} but the scene has no {m.type}")
            continue
        count = obj["count"]
        if m.plural != (count != 1):
            problems.append(f"{m.noun!r} has the wrong grammatical number for count {count}")
        for word in m.numbers:
            if NUMBERS[word] != count:
                problems.append(f"says {word} {m.noun} but the scene has {count}")
        for word in m.colours:
            if _norm(word) != obj["colour"]:
                problems.append(f"says {word} {m.noun} but they are {obj['colour']}")
        if m.vague is not None and not m.vague[1][0] <= count <= m.vague[1][1]:
            problems.append(f"says {m.vague[0]} {m.noun} but the scene has {count}")
    for pos in claims.positions:
        problems.extend(_check_position(pos, objects, scene["relations"]))
    return problems


def check_caption(caption: str, scene: dict[str, Any]) -> list[str]:
    """Problems of ``caption`` against the scene JSON ``scene``; empty when every stated fact holds."""
    return problems_in(parse_caption(caption), scene)


def true_of(claims: Claims, scene: dict[str, Any]) -> bool:
    """Whether every fact of the parsed caption holds in ``scene``."""
    return not problems_in(claims, scene)


def _norm(colour: str) -> str:
    return "grey" if colour == "gray" else colour


def _mentions(tokens: list[str]) -> list[tuple[int, int, str, bool]]:
    """Object nouns as ``(start, end, type, plural)``, longest match first."""
    out: list[tuple[int, int, str, bool]] = []
    i = 0
    while i < len(tokens):
        for size in range(_MAX_WORDS, 0, -1):
            hit = _LEXICON.get(tuple(tokens[i : i + size]))
            if hit is not None:
                out.append((i, i + size, hit[0], hit[1]))
                i += size
                break
        else:
            i += 1
    return out


def _position(tokens: list[str], k: int, spans: list[tuple[int, int, str, bool]]) -> Position:
    side = _POSITIONS[tokens[k]]
    before = [m for m in spans if m[1] <= k]
    subject = before[-1][2] if before else None
    j = k + 1
    if j < len(tokens) and tokens[j] in ("side", "part"):
        j += 1
    if j < len(tokens) and tokens[j] == "of" and j + 1 < len(tokens) and tokens[j + 1] in ("the", "a", "an"):
        target = [m for m in spans if m[0] == j + 2]
        if target:
            return Position(tokens[k], side, subject, target[0][2])
    return Position(tokens[k], side, subject, None)


def _check_position(
    pos: Position, objects: dict[str, dict[str, Any]], relations: list[dict[str, str]]
) -> list[str]:
    if pos.subject is None:
        return [f"position {pos.word!r} has no object before it"]
    if pos.relation_to is not None:
        if pos.side not in ("left", "right"):
            return [f"relation {pos.side} of {pos.relation_to} is not an image-plane relation"]
        wanted = {"subject": pos.subject, "relation": f"{pos.side} of", "object": pos.relation_to}
        if wanted not in relations:
            return [f"{pos.subject} is not {pos.side} of {pos.relation_to}"]
        return []
    if pos.subject not in objects:
        return []  # already reported as a missing object
    if objects[pos.subject]["position"] != pos.side:
        return [f"{pos.subject} is {objects[pos.subject]['position']}, caption says {pos.side}"]
    return []


def truth_matrix(
    captions: Sequence[str],
    caption_class: Sequence[str] | None,
    scenes: Sequence[dict[str, Any]],
) -> NDArray[np.bool_]:
    """``[n_captions, n_scenes]``: caption ``c`` is true of scene ``j``.

    True means: every fact the caption states holds in ``j`` and, unless ``caption_class`` is None,
    ``j`` is of the caption's scene class (``caption_class[c]``, the class of the image the caption
    was written for). The class test stands in for the class words ("airport", "dense residential
    area") that the checker does not read; it can only make the sets smaller than the checker alone.
    """
    if caption_class is not None and len(captions) != len(caption_class):
        raise InvalidInputError(f"{len(captions)} captions but {len(caption_class)} caption classes")
    by_class: dict[str | None, list[int]] = {}
    for j, scene in enumerate(scenes):
        by_class.setdefault(scene["class"] if caption_class is not None else None, []).append(j)
    out = np.zeros((len(captions), len(scenes)), dtype=np.bool_)
    for c, caption in enumerate(captions):
        claims = parse_caption(caption)
        for j in by_class.get(caption_class[c] if caption_class is not None else None, []):
            out[c, j] = true_of(claims, scenes[j])
    return out
