"""The scene reader: band presets, nodata and masks, the 8-bit rule, bad scenes named, paths as given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from rsir.index.scenes import is_remote, read_window
from rsir.index_builder.chipper import list_folder
from rsir.index_builder.chips import ChipConfig
from rsir.index_builder.scenes import PRESETS, open_scene, parse_bands
from rsir.model.errors import DatasetError
from tests.index_builder.geo import write_scene


def _raw(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.asarray(src.read())


def test_uint8_rgb_window_is_read_as_it_is(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "rgb.tif", 300, 200)
    scene = open_scene("rgb", None, str(path), PRESETS["rgb"])
    assert (scene.width, scene.height, scene.crs, scene.stretch) == (300, 200, "EPSG:32633", None)
    chip = read_window(scene, (50, 20, 100, 100), 100)
    np.testing.assert_array_equal(chip.rgb, _raw(path)[:3, 20:120, 50:150].transpose(1, 2, 0))
    assert chip.valid_fraction == 1.0
    # Read at half size: the whole window, resampled (not a crop).
    assert read_window(scene, (50, 20, 100, 100), 50).rgb.shape == (50, 50, 3)


def test_sentinel2_preset_picks_bands_by_description_and_applies_the_offset(tmp_path: Path) -> None:
    path = write_scene(
        tmp_path / "s2.tif", 64, 64, count=4, dtype="uint16", descriptions=["B02", "B03", "B04", "B08"]
    )
    scene = open_scene("s2", None, str(path), PRESETS["sentinel2-l2a"])
    assert [b.index for b in scene.bands] == [3, 2, 1]  # B04, B03, B02: not bands 1-3 (BGR)
    raw = _raw(path).astype(np.float64)
    got = read_window(scene, (0, 0, 64, 64), 64).rgb
    for channel, band in enumerate((2, 1, 0)):
        reflectance = (raw[band] - 1000) / 10_000  # baseline >= 04.00: offset -1000 DN
        expected = np.clip(reflectance / 0.3 * 255, 0, 255)
        # within rounding: the reader scales in another order, so x.5 may round either way
        np.testing.assert_allclose(got[:, :, channel], expected, atol=0.5 + 1e-9)
    # An older processing baseline (STAC property) has no offset.
    old = open_scene("s2", None, str(path), PRESETS["sentinel2-l2a"], {"s2:processing_baseline": "03.01"})
    assert old.offset == 0.0


def test_landsat_preset_scale_and_offset(tmp_path: Path) -> None:
    path = write_scene(
        tmp_path / "l8.tif", 32, 32, count=3, dtype="uint16", descriptions=["SR_B2", "SR_B3", "SR_B4"]
    )
    scene = open_scene("l8", None, str(path), PRESETS["landsat-c2-l2"])
    raw = _raw(path).astype(np.float64)
    expected = np.clip((raw[2] * 0.0000275 - 0.2) / 0.3 * 255, 0, 255)
    np.testing.assert_allclose(read_window(scene, (0, 0, 32, 32), 32).rgb[:, :, 0], expected, atol=0.5 + 1e-9)


def test_percentile_stretch_ignores_nodata_and_nodata_pixels_are_black(tmp_path: Path) -> None:
    # uint16 values 1..9999 with a 60 px nodata border on a 100 px scene: 64% of pixels are nodata,
    # so a stretch that counted them would start at 0.
    path = write_scene(tmp_path / "u16.tif", 100, 100, dtype="uint16", nodata=0, border=60)
    scene = open_scene("u16", None, str(path), PRESETS["rgb"])
    raw = _raw(path).astype(np.float64)
    assert scene.stretch is not None
    for c in range(3):
        valid = raw[c][60:, 60:]
        lo, hi = np.percentile(valid, [2, 98])
        # the statistics come from a decimated read; on a 100 px scene it is the full one
        assert scene.stretch[c] == pytest.approx((lo, hi))
    chip = read_window(scene, (0, 0, 100, 100), 100)
    assert chip.valid_fraction == pytest.approx(0.4 * 0.4)
    assert not chip.rgb[:60].any() and not chip.rgb[:, :60].any()
    lo, hi = scene.stretch[0]
    expected = np.clip((raw[0][60:, 60:] - lo) * 255 / (hi - lo), 0, 255)
    np.testing.assert_allclose(chip.rgb[60:, 60:, 0], expected, atol=0.5 + 1e-9)


def test_mask_band_without_a_nodata_value(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "masked.tif", 64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 16:] = 255
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    scene = open_scene("m", None, str(path), PRESETS["rgb"])
    chip = read_window(scene, (0, 0, 64, 64), 64)
    assert chip.valid_fraction == pytest.approx(0.75)
    assert not chip.rgb[:, :16].any()


def test_time_from_the_tiff_tag(tmp_path: Path) -> None:
    path = write_scene(tmp_path / "t.tif", 16, 16, tags={"TIFFTAG_DATETIME": "2023:05:01 10:20:30"})
    assert open_scene("t", None, str(path), PRESETS["rgb"]).properties["datetime"] == "2023-05-01T10:20:30Z"


def test_bad_scenes_are_named_with_the_reason(tmp_path: Path) -> None:
    plain = write_scene(tmp_path / "plain.tif", 16, 16, crs=None)
    with pytest.raises(DatasetError, match=r"plain\.tif: no georeference"):
        open_scene("p", None, str(plain), PRESETS["rgb"])
    rgb = write_scene(tmp_path / "rgb.tif", 16, 16)
    with pytest.raises(DatasetError, match="no band described as 'B04'"):
        open_scene("r", None, str(rgb), PRESETS["sentinel2-l2a"])
    with pytest.raises(DatasetError, match="has 3 bands, no band 4"):
        open_scene("r", None, str(rgb), parse_bands("4,3,2"))
    # Declared 100,000 x 100,000 (a sparse file: no pixel is written).
    huge = tmp_path / "huge.tif"
    profile: dict[str, Any] = {"driver": "GTiff", "width": 100_000, "height": 100_000, "count": 3}
    profile |= {"dtype": "uint8", "crs": "EPSG:32633", "transform": from_origin(0, 0, 1, 1)}
    with rasterio.open(huge, "w", tiled=True, blockxsize=1024, blockysize=1024, sparse_ok=True, **profile):
        pass
    with pytest.raises(DatasetError, match=r"huge\.tif: declares 100000 x 100000 pixels, over the limit"):
        open_scene("h", None, str(huge), PRESETS["rgb"])
    with pytest.raises(DatasetError, match=r"missing\.tif: cannot be read"):
        open_scene("m", None, str(tmp_path / "missing.tif"), PRESETS["rgb"])
    with pytest.raises(DatasetError, match="outside"):
        read_window(open_scene("r", None, str(rgb), PRESETS["rgb"]), (10, 10, 10, 10), 10)


def test_a_corrupt_block_fails_the_chip_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.tif"
    rng = np.random.default_rng(0)
    profile: dict[str, Any] = {"driver": "GTiff", "width": 128, "height": 128, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32633", "transform": from_origin(0, 0, 1, 1), "compress": "deflate"}
    with rasterio.open(path, "w", tiled=True, blockxsize=64, blockysize=64, **profile) as dst:
        dst.write(rng.integers(0, 255, (3, 128, 128), dtype=np.uint8))
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64  # the deflate stream of band 1's block (1, 1)
    path.write_bytes(bytes(data))
    scene = open_scene("c", None, str(path), PRESETS["rgb"])
    assert read_window(scene, (0, 0, 64, 64), 64).valid_fraction == 1.0  # other blocks still read
    with pytest.raises(DatasetError, match=r"corrupt.tif: window \(64, 64, 64, 64\) cannot be read"):
        read_window(scene, (64, 64, 64, 64), 64)


def test_unknown_crs_scene_is_reported_and_the_rest_listed(tmp_path: Path) -> None:
    write_scene(tmp_path / "a" / "good.tif", 300, 300)
    local = CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    write_scene(tmp_path / "a" / "local.tif", 64, 64, crs=local.to_wkt(), transform=from_origin(0, 64, 1, 1))
    listing = list_folder(tmp_path / "a", ChipConfig(224), PRESETS["rgb"])
    assert [s["id"] for s in listing.skipped] == ["local.tif"]
    assert "unknown CRS" in listing.skipped[0]["reason"]
    assert [i.id for i in listing.items] == ["good.tif/0_0", "good.tif/0_1", "good.tif/1_0", "good.tif/1_1"]


@pytest.mark.parametrize(
    ("href", "remote"),
    [
        ("/vsis3/bucket/scene.tif", True),
        ("/vsicurl/https://example.org/scene.tif", True),
        ("s3://bucket/scene.tif", True),
        ("https://example.org/scene.tif", True),
        ("/data/archive/scene.tif", False),
        ("scenes/scene.tif", False),
    ],
)
def test_gdal_paths_are_recognised_and_passed_to_rasterio_unchanged(
    href: str, remote: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_remote(href) == remote
    opened: list[str] = []

    def fake_open(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        raise rasterio.errors.RasterioIOError("no network in tests")

    monkeypatch.setattr(rasterio, "open", fake_open)
    with pytest.raises(DatasetError, match="cannot be read"):
        open_scene("x", None, href, PRESETS["rgb"])
    assert opened == [href]


def test_bands_option() -> None:
    assert parse_bands("sentinel2-l2a") is PRESETS["sentinel2-l2a"]
    assert parse_bands("4,3,2").bands == (4, 3, 2)
    assert parse_bands("B04, B03, B02").bands == ("B04", "B03", "B02")
    for bad in ("1,2", "0,1,2", "unknown-preset"):
        with pytest.raises(DatasetError, match="--bands"):
            parse_bands(bad)
