"""An independent truth checker for SynthRS captions, driven only by the scene JSON.

It knows English object nouns, number words, colour words and position words, but nothing about the
generator's templates: it finds every object noun in a caption, reads the number and colour words in
front of it, and checks them (and the noun's grammatical number) against the scene's ``objects``; it
checks every position word against the nearest object noun before it, either as an absolute side or,
when followed by "of the <object>", as a relation in the scene's ``relations``.
"""

from __future__ import annotations

from typing import Any

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


def check_caption(caption: str, scene: dict[str, Any]) -> list[str]:
    """Problems of ``caption`` against the scene JSON ``scene``; empty when every stated fact holds."""
    problems: list[str] = []
    if caption != caption.lower() or not caption.endswith(" ."):
        problems.append("not lower case or no final ' .'")
    tokens = caption.removesuffix(" .").split()
    objects = {o["type"]: o for o in scene["objects"]}
    relations = {(r["subject"], r["relation"], r["object"]) for r in scene["relations"]}
    mentions = _mentions(tokens)
    consumed: set[int] = set()
    for start, end, type_, plural in mentions:
        obj = objects.get(type_)
        noun = " ".join(tokens[start:end])
        if obj is None:
            problems.append(f"mentions {noun!r} but the scene has no {type_}")
            continue
        if plural != (obj["count"] != 1):
            problems.append(f"{noun!r} has the wrong grammatical number for count {obj['count']}")
        k = start - 1
        while k >= 0 and (tokens[k] in NUMBERS or tokens[k] in COLOURS or tokens[k] in _ADJECTIVES):
            word = tokens[k]
            consumed.add(k)
            if word in NUMBERS and NUMBERS[word] != obj["count"]:
                problems.append(f"says {word} {noun} but the scene has {obj['count']}")
            if word in COLOURS and _norm(word) != obj["colour"]:
                problems.append(f"says {word} {noun} but they are {obj['colour']}")
            k -= 1
    for k, word in enumerate(tokens):
        if (word in NUMBERS or word in COLOURS) and k not in consumed:
            problems.append(f"{word!r} at word {k} describes no object noun")
        if word in _POSITIONS:
            problems.extend(_check_position(tokens, k, mentions, objects, relations))
    return problems


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


def _check_position(
    tokens: list[str],
    k: int,
    mentions: list[tuple[int, int, str, bool]],
    objects: dict[str, dict[str, Any]],
    relations: set[tuple[str, str, str]],
) -> list[str]:
    side = _POSITIONS[tokens[k]]
    before = [m for m in mentions if m[1] <= k]
    if not before:
        return [f"position {tokens[k]!r} has no object before it"]
    subject = before[-1][2]
    j = k + 1
    if j < len(tokens) and tokens[j] in ("side", "part"):
        j += 1
    if j < len(tokens) and tokens[j] == "of" and j + 1 < len(tokens) and tokens[j + 1] in ("the", "a", "an"):
        target = [m for m in mentions if m[0] == j + 2]
        if target:
            if side not in ("left", "right"):
                return [f"relation {side} of {target[0][2]} is not an image-plane relation"]
            if (subject, f"{side} of", target[0][2]) not in relations:
                return [f"{subject} is not {side} of {target[0][2]}"]
            return []
    if subject not in objects:
        return []  # already reported as a missing object
    if objects[subject]["position"] != side:
        return [f"{subject} is {objects[subject]['position']}, caption says {side}"]
    return []
