"""Shared vocabulary of SynthRS: colour palettes, ground materials, sides, count words.

Every coordinate in SynthRS is normalised: ``(x, y)`` in ``[0, 1]``, x to the right, y downwards (image
convention), so a scene is independent of the rendered size.
"""

from __future__ import annotations

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (normalised)

# Solid materials: roofs, vehicles, tanks, tracks. Hues are kept far apart so that a caption's colour word
# stays true after the renderer's lighting and noise.
SOLID: dict[str, RGB] = {
    "white": (230, 230, 224),
    "grey": (132, 132, 130),
    "red": (182, 56, 46),
    "blue": (50, 92, 172),
    "yellow": (214, 188, 66),
    "green": (70, 132, 60),
    "brown": (126, 84, 52),
    "black": (34, 34, 40),
    "orange": (214, 116, 40),
}

# Water bodies look darker and less saturated than painted objects of the same colour name.
WATER: dict[str, RGB] = {
    "blue": (36, 78, 128),
    "green": (44, 98, 78),
    "brown": (114, 96, 66),
    "grey": (92, 102, 108),
}

# Foliage: "green" trees are darker than painted green so that forests read as canopy.
FOLIAGE: dict[str, RGB] = {
    "green": (48, 94, 44),
    "yellow": (178, 160, 58),
    "orange": (190, 110, 44),
    "red": (150, 52, 40),
}

# Crop fields: muted so that neighbouring fields of one colour still separate by brightness.
FIELDS: dict[str, RGB] = {
    "green": (92, 138, 60),
    "yellow": (200, 182, 96),
    "brown": (140, 106, 70),
}

SANDS: dict[str, RGB] = {"yellow": (208, 188, 128), "white": (226, 222, 208)}

# Unlabelled ground materials; they never carry a colour word in a caption.
GRASS: RGB = (98, 120, 72)
URBAN: RGB = (120, 118, 112)
ASPHALT: RGB = (76, 78, 80)
BARE: RGB = (150, 132, 102)

SIDES: tuple[str, ...] = ("left", "right", "top", "bottom")
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)


def number_word(n: int) -> str:
    """English word for ``0 <= n <= 12``; larger counts are spelled as digits (never used by captions)."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def shrink(box: Box, margin: float) -> Box:
    """``box`` with ``margin`` (normalised) removed on every side, never inverted."""
    x0, y0, x1, y1 = box
    mx = min(margin, (x1 - x0) / 2)
    my = min(margin, (y1 - y0) / 2)
    return (x0 + mx, y0 + my, x1 - mx, y1 - my)
