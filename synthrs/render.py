"""Rasterise a :class:`~rsir.synthrs.scene.Scene` to an RGB image that looks vaguely like an aerial tile.

Pipeline (all at the output size, no supersampling, for speed): value-noise textured ground, flat
primitives with offset shadows (PIL ``ImageDraw``), a multiplicative grain texture so that flat shapes
look like materials, global lighting (gain, colour cast, sun gradient), sensor noise, a slight blur.

Ground texture and lighting depend on the scene's family, sensor noise on its index: twins share
everything but the caption-stated detail and the noise.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from rsir.synthrs.scene import Prim, Scene
from rsir.synthrs.vocab import RGB

_TEXTURE_STREAM, _NOISE_STREAM = 3, 4
_SOFTEN = ImageFilter.BoxBlur(0.5)


def render_scene(scene: Scene, size: int = 224) -> Image.Image:
    """RGB image of ``size`` x ``size`` pixels; deterministic for a given scene and size."""
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    tex = np.random.default_rng([scene.seed, scene.family, _TEXTURE_STREAM])
    img = _ground(tex, size, scene.background.colour, scene.background.roughness)
    draw = ImageDraw.Draw(img)
    r, g, b = scene.background.colour
    shade = (int(r * 0.45), int(g * 0.45), int(b * 0.45))
    for prim in scene.prims:
        _draw(draw, prim, size, shade)
    img = _grade(img, tex, np.random.default_rng([scene.seed, scene.index, _NOISE_STREAM]))
    return img.filter(_SOFTEN)


def _upsample(small: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Bicubic resize of a ``[k, k]`` array in ``[0, 1]`` to ``[size, size]`` (through 8-bit, for speed)."""
    grid = Image.fromarray((np.clip(small, 0, 1) * 255).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) * (1 / 255)


def _fbm(rng: np.random.Generator, size: int) -> Image.Image:
    """``[size, size]`` 8-bit fractal noise (three octaves, mean about 128) as a PIL ``L`` image.

    The octaves are summed on a small grid and upsampled once: only one full-resolution operation.
    """
    k = max(4, size // 8)
    coarse = _upsample(rng.random((4, 4)).astype(np.float32), k)
    mid = _upsample(rng.random((10, 10)).astype(np.float32), k)
    fine = rng.random((k, k)).astype(np.float32)
    small = 0.5 * coarse + 0.3 * mid + 0.2 * fine
    return Image.fromarray((np.clip(small, 0, 1) * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )


def _ground(rng: np.random.Generator, size: int, colour: RGB, roughness: float) -> Image.Image:
    """RGB ground: per-channel lookup of the fractal noise, so the noise sets brightness and a slight hue."""
    noise = _fbm(rng, size)
    drift = rng.uniform(-0.06, 0.06, size=3)
    t = np.arange(256, dtype=np.float64) / 255 - 0.5
    bands = []
    for c, d in zip(colour, drift, strict=True):
        lut = np.clip(c * (1 + 2 * roughness * t) * (1 + float(d) * t), 0, 255).astype(np.uint8)
        bands.append(noise.point(lut.tolist()))
    return Image.merge("RGB", bands)


def _draw(draw: ImageDraw.ImageDraw, p: Prim, size: int, shade: RGB) -> None:
    pts = [(x * size, y * size) for x, y in p.pts]
    if p.shadow > 0:
        d = max(1.0, p.shadow * size)
        _shape(draw, p, [(x + d, y + d) for x, y in pts], size, shade)
    _shape(draw, p, pts, size, p.colour)


def _shape(
    draw: ImageDraw.ImageDraw, p: Prim, pts: list[tuple[float, float]], size: int, colour: RGB
) -> None:
    if p.kind == "poly":
        draw.polygon(pts, fill=colour)
    elif p.kind == "line":
        draw.line(pts, fill=colour, width=max(1, round(p.width * size)), joint="curve")
    else:
        (x, y), r = pts[0], p.width * size
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


_HEADROOM = 1.4  # largest light factor; the multiply image stores factor / _HEADROOM


def _grade(img: Image.Image, tex: np.random.Generator, noise: np.random.Generator) -> Image.Image:
    """Grain, sun gradient, gain and colour cast, then uniform sensor noise; RGB in, RGB out."""
    size = img.size[0]
    k = max(4, size // 3)
    grain = tex.random((k, k)).astype(np.float32) - 0.5
    theta = float(tex.uniform(0, 2 * np.pi))
    # Sun gradient: brightness changes linearly by up to +-8 % along a random direction. Built on the
    # grain's small grid: a bicubic upsample keeps a linear ramp linear, at a ninth of the work.
    ramp = np.linspace(-0.08, 0.08, k, dtype=np.float32)
    light = (1 + 0.16 * grain) * (1 + np.cos(theta) * ramp[None, :] + np.sin(theta) * ramp[:, None])
    small = Image.fromarray((np.clip(light / _HEADROOM, 0, 1) * 255).astype(np.uint8))
    factor = small.resize((size, size), Image.Resampling.BICUBIC)
    img = ImageChops.multiply(img, Image.merge("RGB", (factor, factor, factor)))
    gain = float(tex.uniform(0.8, 1.15)) * _HEADROOM
    cast = tex.uniform(0.95, 1.05, size=3) * gain
    levels = np.arange(256, dtype=np.float64)
    lut = np.concatenate([np.clip(levels * c, 0, 255) for c in cast]).astype(np.uint8)
    img = img.point(lut.tolist())
    # Uniform noise of half-width k has the standard deviation k / sqrt(3): about 2.3 to 5.8 levels.
    k_noise = int(tex.integers(4, 11))
    jitter = noise.integers(0, 2 * k_noise + 1, size=(size, size, 3), dtype=np.uint8)
    return ImageChops.add(img, Image.fromarray(jitter), scale=1.0, offset=-k_noise)
