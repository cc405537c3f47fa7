"""Attention overlays: the colour ramp, the centre-square crop, drawing over a tile, PNG/JPEG output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from rsir.service.overlay import _RAMP, centre_square, colourise, overlay, to_jpeg, to_png

RED, GREEN, BLUE = (220, 20, 30), (10, 200, 40), (30, 40, 210)


def _bands(width: int, height: int, colours: tuple[tuple[int, int, int], ...], axis: int) -> Image.Image:
    """An image split into equal bands of ``colours`` along ``axis`` (1: left to right, 0: top to bottom)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    n = width if axis == 1 else height
    edges = np.linspace(0, n, len(colours) + 1).astype(int)
    for colour, lo, hi in zip(colours, edges[:-1], edges[1:], strict=True):
        if axis == 1:
            pixels[:, lo:hi] = colour
        else:
            pixels[lo:hi] = colour
    return Image.fromarray(pixels)


def _array(image: Image.Image) -> NDArray[np.int16]:
    return np.asarray(image, dtype=np.int16)


# -- colourise -----------------------------------------------------------------------------------------
def test_colourise_endpoints_are_the_ramps_ends() -> None:
    out = colourise(np.asarray([0.0, 1.0]))
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    np.testing.assert_array_equal(out[0], _RAMP[0].astype(np.uint8))
    np.testing.assert_array_equal(out[1], _RAMP[-1].astype(np.uint8))


def test_colourise_clips_interpolates_and_keeps_shape() -> None:
    np.testing.assert_array_equal(colourise(np.asarray([-3.0, 7.0])), colourise(np.asarray([0.0, 1.0])))
    step = 1.0 / (len(_RAMP) - 1)
    np.testing.assert_array_equal(colourise(np.asarray([step * 3])), _RAMP[3:4].astype(np.uint8))
    half = colourise(np.asarray([step * 0.5]))[0]
    np.testing.assert_allclose(half, (_RAMP[0] + _RAMP[1]) / 2, atol=0.51)
    grid = colourise(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4))
    assert grid.shape == (3, 4, 3) and grid.dtype == np.uint8
    brightness = colourise(np.linspace(0, 1, 50)).astype(np.int32).sum(axis=1)
    assert (np.diff(brightness) >= -3).all() and brightness[-1] > brightness[0]  # dark to bright


# -- centre_square -------------------------------------------------------------------------------------
def test_centre_square_crops_the_centre_of_a_wide_image() -> None:
    wide = _bands(300, 100, (RED, GREEN, BLUE), axis=1)
    square = centre_square(wide, 40)
    assert square.size == (40, 40) and square.mode == "RGB"
    np.testing.assert_array_equal(_array(square), np.broadcast_to(GREEN, (40, 40, 3)))


def test_centre_square_crops_the_centre_of_a_tall_image() -> None:
    tall = _bands(60, 180, (BLUE, RED, GREEN), axis=0)
    square = centre_square(tall, 25)
    assert square.size == (25, 25)
    np.testing.assert_array_equal(_array(square), np.broadcast_to(RED, (25, 25, 3)))


def test_centre_square_keeps_a_square_and_converts_modes() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(centre_square(Image.fromarray(pixels), 32)), pixels)
    grey = centre_square(Image.fromarray(np.full((20, 40), 90, np.uint8), mode="L"), 10)
    assert grey.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(grey), np.full((10, 10, 3), 90, np.uint8))
    rgba = Image.fromarray(np.dstack([pixels, np.full((32, 32), 255, np.uint8)]), mode="RGBA")
    assert centre_square(rgba, 16).mode == "RGB"


# -- overlay -------------------------------------------------------------------------------------------
@pytest.fixture
def tile() -> Image.Image:
    rng = np.random.default_rng(1)
    pixels = rng.integers(20, 60, (90, 120, 3), dtype=np.uint8)  # a dark, non-square image
    return Image.fromarray(pixels)


def test_zero_attention_leaves_the_tile_unchanged(tile: Image.Image) -> None:
    out = overlay(tile, np.zeros((4, 4), np.float32), size=64)
    assert out.size == (64, 64) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(centre_square(tile, 64)))


def test_one_hot_patch_brightens_its_region_only(tile: Image.Image) -> None:
    size = 64
    attention = np.zeros((4, 4), np.float32)
    attention[0, 0] = 0.3  # scaled by the map's maximum: the hot patch is fully coloured
    out = _array(overlay(tile, attention, size=size, alpha=0.6))
    base = _array(centre_square(tile, size))
    cell = size // 4
    hot = (slice(0, cell // 2), slice(0, cell // 2))  # well inside patch (0, 0)
    assert out[hot].mean() > base[hot].mean() + 50
    assert (np.abs(out[hot] - base[hot]).sum(axis=-1) > 30).all()
    # Far from the hot patch (beyond the bilinear kernel's reach) the tile shows unchanged.
    far = (slice(size - 2 * cell, size), slice(size - 2 * cell, size))
    assert np.abs(out[far] - base[far]).max() <= 1
    # The brightest overlay pixel is the ramp's top colour blended at alpha.
    expected = np.round(base[0, 0] * 0.4 + _RAMP[-1] * 0.6)
    np.testing.assert_allclose(out[0, 0], expected, atol=2)


def test_overlay_scale_does_not_depend_on_the_maps_magnitude(tile: Image.Image) -> None:
    rng = np.random.default_rng(2)
    attention = rng.random((3, 5)).astype(np.float32)
    a = np.asarray(overlay(tile, attention, size=48))
    b = np.asarray(overlay(tile, attention * 1000.0, size=48))
    np.testing.assert_array_equal(a, b)
    assert np.asarray(overlay(tile, attention, size=48, alpha=0.0)).tolist() == (
        np.asarray(centre_square(tile, 48)).tolist()
    )


@pytest.mark.parametrize("shape", [(16,), (2, 3, 4), (0, 4), (4, 0), ()])
def test_bad_attention_shapes_raise(tile: Image.Image, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="attention"):
        overlay(tile, np.zeros(shape, np.float32))


# -- encoding ------------------------------------------------------------------------------------------
def test_png_round_trip_is_lossless(tile: Image.Image) -> None:
    data = to_png(tile)
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as back:
        assert back.format == "PNG" and back.size == tile.size
        np.testing.assert_array_equal(np.asarray(back.convert("RGB")), np.asarray(tile))


def test_jpeg_round_trip_is_close(tile: Image.Image) -> None:
    smooth = _bands(64, 48, (RED, GREEN, BLUE), axis=1)
    for image in (smooth, smooth.convert("RGBA"), overlay(tile, np.eye(3, dtype=np.float32), size=64)):
        data = to_jpeg(image, quality=90)
        assert data.startswith(b"\xff\xd8")
        with Image.open(io.BytesIO(data)) as back:
            assert back.format == "JPEG" and back.size == image.size and back.mode == "RGB"
            diff = np.abs(_array(back) - _array(image.convert("RGB")))
            assert diff.mean() < 6
    assert len(to_jpeg(smooth, quality=20)) < len(to_jpeg(smooth, quality=95))
