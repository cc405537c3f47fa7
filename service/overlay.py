"""Attention heatmaps drawn over image tiles (pure image computation: arrays and PIL in, PNG out).

The patch grid covers the model's input, which is the image's centre square (CLIP preprocessing
resizes the short side and crops the centre), so the tile is cropped the same way before drawing.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# A perceptually ordered dark-to-bright ramp (close to matplotlib's "inferno"), interpolated linearly.
_RAMP = np.asarray(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float32,
)


def centre_square(image: Image.Image, size: int) -> Image.Image:
    """The image's centre square resized to ``size`` (what the model saw, at display size)."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return (
        image.convert("RGB")
        .crop((left, top, left + side, top + side))
        .resize((size, size), Image.Resampling.BICUBIC)
    )


def colourise(values: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Values in [0, 1] -> RGB through the ramp."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(v).astype(np.int64)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    frac = (v - low)[..., None]
    return np.round(_RAMP[low] * (1 - frac) + _RAMP[high] * frac).astype(np.uint8)


def overlay(
    image: Image.Image, attention: NDArray[np.floating], size: int = 256, alpha: float = 0.6
) -> Image.Image:
    """``attention [gh, gw]`` (non-negative) upsampled over the tile; brighter = more attention.

    The map is scaled by its maximum, so the strongest patch is always fully coloured; opacity
    follows the value so that unattended areas show the image.
    """
    if attention.ndim != 2 or attention.size == 0:
        raise ValueError(f"attention must be a non-empty [gh, gw] map, got shape {attention.shape}")
    tile = np.asarray(centre_square(image, size), dtype=np.float32)
    peak = float(np.max(attention))
    scaled = np.asarray(attention, np.float32) / peak if peak > 0 else np.zeros_like(attention, np.float32)
    up = np.asarray(
        Image.fromarray(scaled, mode="F").resize((size, size), Image.Resampling.BILINEAR), np.float32
    )
    colour = colourise(up).astype(np.float32)
    weight = (alpha * np.clip(up, 0.0, 1.0))[..., None]
    return Image.fromarray(np.round(tile * (1 - weight) + colour * weight).astype(np.uint8))


def to_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def to_jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
