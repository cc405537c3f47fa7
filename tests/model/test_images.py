"""Image decoding: formats, the band/stretch rule for non-8-bit rasters, and every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rsir.model.errors import ImageDecodeError
from rsir.model.images import array_to_rgb, decode_image
from tests.conftest import require_shared


def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def test_eight_bit_formats_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(decode_image(_png_bytes(rgb))), rgb)
    grey = rgb[:, :, 0]
    out = np.asarray(decode_image(_png_bytes(grey)))
    assert out.shape == (20, 30, 3) and np.array_equal(out[:, :, 2], grey)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, rgb)
    assert np.array_equal(np.asarray(decode_image(path)), rgb)
    jpeg = decode_image(_png_bytes(rgb, "JPEG"))
    assert jpeg.mode == "RGB" and jpeg.size == (30, 20)


def test_sixteen_bit_multiband_geotiff_uses_bands_123_with_percentile_stretch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    bands = rng.integers(1000, 3000, (5, 40, 50), dtype=np.uint16)  # 5-band tile, planar layout
    path = tmp_path / "tile.tif"
    tifffile.imwrite(path, bands, planarconfig="separate")
    out = np.asarray(decode_image(path))
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    for c in range(3):
        band = bands[c].astype(np.float64)
        lo, hi = np.percentile(band, [2, 98])
        expected = np.clip((band - lo) * 255.0 / (hi - lo), 0, 255).astype(np.uint8)
        assert np.array_equal(out[:, :, c], expected)
    # Contiguous [H,W,C] layout gives the same picture.
    contiguous = tmp_path / "tile_contig.tif"
    tifffile.imwrite(contiguous, np.moveaxis(bands, 0, -1), planarconfig="contig")
    assert np.array_equal(np.asarray(decode_image(contiguous)), out)


def test_array_rule_edge_cases() -> None:
    flat = np.full((4, 4), 7, dtype=np.uint16)  # constant band: no range to stretch
    assert np.array_equal(array_to_rgb(flat), np.zeros((4, 4, 3), dtype=np.uint8))
    with_nan = np.array([[0.0, np.nan], [1.0, 2.0]], dtype=np.float32)
    assert array_to_rgb(with_nan)[0, 1, 0] == 0
    two_band = np.stack([np.arange(16, dtype=np.uint8).reshape(4, 4)] * 2, axis=-1)
    assert np.array_equal(array_to_rgb(two_band)[:, :, 1], two_band[:, :, 0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"hello, this is plainly text and not an image", "not a recognised image format"),
        (b"II*\x00garbage-after-tiff-magic", "corrupt or truncated TIFF"),
    ],
)
def test_bad_bytes_are_rejected_with_reason(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_truncated_png_and_jpeg() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):
        data = _png_bytes(rgb, fmt)
        with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
            decode_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 1-bit PNG of 20000 x 20000 compresses to a few kB but would decode to 400 megapixels.
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(buf.getvalue(), max_pixels=10_000_000)
    small = _png_bytes(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match="100 pixels, over the limit of 99"):
        decode_image(small, max_pixels=99)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "absent.png")


def test_every_real_image_decodes() -> None:
    folder = require_shared("rs-real/images")
    files = sorted(folder.iterdir())
    assert len(files) == 60
    for path in files:
        img = decode_image(path)
        assert img.mode == "RGB" and min(img.size) >= 224, path.name
