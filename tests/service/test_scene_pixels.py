"""service.scene_pixels on small GeoTIFFs written here: a mask band, a single band, a float scene with
NaN nodata, and windows that do not fit, against numpy on the arrays written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from service.scene_pixels import ScenePixelsError, Stretch, read_rgb, scene_stretch


def write(path: Path, pixels: np.ndarray, nodata: float | None = None, mask: np.ndarray | None = None) -> str:
    count, height, width = pixels.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": pixels.dtype.name,
        "crs": "EPSG:32631",
        "transform": Affine(10, 0, 500_000, 0, -10, 4_000_000),
        "nodata": nodata,
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
        if mask is not None:
            dst.write_mask(mask)
    return str(path)


def test_a_mask_band_blacks_out_its_pixels(tmp_path: Path):
    pixels = np.random.default_rng(0).integers(1, 256, (3, 40, 50), dtype=np.uint8)
    mask = np.full((40, 50), 255, np.uint8)
    mask[10:20, 5:15] = 0
    href = write(tmp_path / "masked.tif", pixels, mask=mask)
    got = read_rgb(href, (0, 0, 50, 40), (40, 50))
    expected = pixels.transpose(1, 2, 0).copy()
    expected[10:20, 5:15] = 0
    assert np.array_equal(got, expected)


def test_a_single_band_is_grey_and_a_float_scene_is_stretched_without_its_nan(tmp_path: Path):
    band = np.random.default_rng(1).integers(0, 256, (1, 30, 30), dtype=np.uint8)
    grey = read_rgb(write(tmp_path / "grey.tif", band), None, (30, 30))
    assert np.array_equal(grey, np.repeat(band.transpose(1, 2, 0), 3, axis=2))

    values = np.random.default_rng(2).uniform(0.0, 0.4, (3, 30, 30)).astype(np.float32)
    values[:, :, :3] = np.nan  # the first three columns
    href = write(tmp_path / "reflectance.tif", values, nodata=float("nan"))
    low, high = np.nanpercentile(values[:, :, 3:].reshape(3, -1), [2, 98], axis=1)
    assert scene_stretch(href) == Stretch(tuple(zip(low.tolist(), high.tolist(), strict=True)))
    got = read_rgb(href, (3, 0, 27, 30), (30, 27))
    expected = np.clip(
        np.rint((values[:, :, 3:] - low[:, None, None]) * 255 / (high - low)[:, None, None]), 0, 255
    )
    assert np.abs(got.astype(int) - expected.transpose(1, 2, 0)).max() <= 1
    assert not read_rgb(href, (0, 0, 3, 30), (30, 3)).any()  # the NaN columns: black


@pytest.mark.parametrize("window", [(-1, 0, 10, 10), (45, 0, 10, 10), (0, 0, 0, 10), (0, 35, 10, 10)])
def test_a_window_outside_the_raster_is_refused(tmp_path: Path, window: tuple[int, int, int, int]):
    href = write(tmp_path / "small.tif", np.ones((3, 40, 50), np.uint8))
    with pytest.raises(ScenePixelsError, match="outside the 50 x 40 raster"):
        read_rgb(href, window, (10, 10))


def test_a_missing_or_corrupt_file_is_a_scene_pixels_error(tmp_path: Path):
    with pytest.raises(ScenePixelsError, match="cannot be opened"):
        read_rgb(str(tmp_path / "absent.tif"), None, (8, 8))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(ScenePixelsError):
        read_rgb(str(broken), None, (8, 8))
