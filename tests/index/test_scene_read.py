"""rsir.index.scenes.read_window (the one read of a chip, the builder's and the service's) on small GeoTIFFs
written here, opened as a build opens them: a mask band, a float scene with NaN nodata, windows that
do not fit and files that do not read, against numpy on the arrays written; and scenes.json's record
read back as the scene it was written from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from rsir.index.originals import Sources
from rsir.index.scenes import Scene, locate_scene, read_scenes, read_window, write_scenes
from rsir.index_builder.scenes import PRESETS, open_scene
from rsir.model.errors import DatasetError


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


def scene(href: str) -> Scene:
    return open_scene("s", None, href, PRESETS["rgb"])


def test_a_mask_band_blacks_out_its_pixels(tmp_path: Path):
    pixels = np.random.default_rng(0).integers(1, 256, (3, 40, 50), dtype=np.uint8)
    mask = np.full((40, 50), 255, np.uint8)
    mask[10:20, 5:15] = 0
    href = write(tmp_path / "masked.tif", pixels, mask=mask)
    got = read_window(scene(href), (0, 0, 50, 40), 50).rgb
    expected = pixels.transpose(1, 2, 0).copy()
    expected[10:20, 5:15] = 0
    assert np.array_equal(got, expected)


def test_a_float_scene_is_stretched_without_its_nan(tmp_path: Path):
    values = np.random.default_rng(2).uniform(0.0, 0.4, (3, 30, 30)).astype(np.float32)
    values[:, :, :3] = np.nan  # the first three columns
    read = scene(write(tmp_path / "reflectance.tif", values, nodata=float("nan")))
    low, high = np.nanpercentile(values[:, :, 3:].reshape(3, -1), [2, 98], axis=1)
    assert read.stretch is not None
    np.testing.assert_allclose(np.asarray(read.stretch), np.stack([low, high], axis=1), rtol=1e-6)
    got = read_window(read, (3, 0, 27, 30), 30).rgb
    expected = np.clip(
        np.rint((values[:, :, 3:] - low[:, None, None]) * 255 / (high - low)[:, None, None]), 0, 255
    )
    assert np.abs(got.astype(int) - expected.transpose(1, 2, 0)).max() <= 1
    assert not read_window(read, (0, 0, 3, 30), 30).rgb.any()  # the NaN columns: black


@pytest.mark.parametrize("window", [(-1, 0, 10, 10), (45, 0, 10, 10), (0, 0, 0, 10), (0, 35, 10, 10)])
def test_a_window_outside_the_raster_is_refused(tmp_path: Path, window: tuple[int, int, int, int]):
    href = write(tmp_path / "small.tif", np.ones((3, 40, 50), np.uint8))
    with pytest.raises(DatasetError, match="outside the 50 x 40 raster"):
        read_window(scene(href), window, 10)


def test_a_scene_file_gone_or_corrupt_since_the_build_is_a_dataset_error(tmp_path: Path):
    href = write(tmp_path / "scene.tif", np.ones((3, 40, 50), np.uint8))
    read = scene(href)
    Path(href).unlink()
    with pytest.raises(DatasetError, match="cannot be read"):
        read_window(read, (0, 0, 8, 8), 8)
    Path(href).write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(DatasetError, match="cannot be read"):
        read_window(read, (0, 0, 8, 8), 8)


def test_scenes_json_gives_back_the_scene_and_relocates_its_bands(tmp_path: Path):
    values = np.random.default_rng(3).integers(1, 4000, (4, 30, 40)).astype(np.uint16)
    archive = tmp_path / "archive"
    archive.mkdir()
    href = write(archive / "s2.tif", values, nodata=0)
    built = open_scene("s2", None, href, PRESETS["rgb"])
    expected = read_window(built, (5, 5, 20, 20), 20).rgb
    version = tmp_path / "v0001"
    version.mkdir()
    write_scenes(version, {"s2": built}, str(archive))
    recorded = read_scenes(version)["s2"]
    assert recorded.bands[0].href == "s2.tif"  # relative to the archive root
    assert locate_scene(recorded, Sources(str(archive), {})) == built
    moved = tmp_path / "mounted"
    archive.rename(moved)
    relocated = locate_scene(recorded, Sources(str(archive), {}), moved)
    assert relocated.bands[0].href == str(moved / "s2.tif")
    np.testing.assert_array_equal(read_window(relocated, (5, 5, 20, 20), 20).rgb, expected)
    assert read_scenes(tmp_path) == {}  # a version without scenes
