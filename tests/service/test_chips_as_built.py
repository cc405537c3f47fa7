"""A chip of a real scene build is served exactly as the build embedded it: the build's band preset
(Sentinel-2 L2A true colour: B04, B03, B02 of a 4-band file, the reflectance rule), its nodata, its
window, read again from ``scenes.json`` by the reader the build used; and a STAC item's three band
assets, each its own file. Expected pixels come from numpy on the arrays rasterio reads back whole;
the served chip encodes to the vector the version holds."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from PIL import Image

from rsir.index.versions import load_index
from rsir.index_builder.build import build
from rsir.index_builder.chips import ChipConfig
from rsir.index_builder.config import BuildConfig
from rsir.model.encoders import ClipEncoder
from tests.index_builder.geo import stac_catalog, write_scene
from tests.service.conftest import LiveServer, make_settings

CHIP = 64
BORDER = 10  # nodata columns and rows on the left and top


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: ClipEncoder) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("as-built")
    scene = write_scene(
        base / "archive" / "s2.tif",
        128,
        128,
        crs="EPSG:32632",
        count=4,
        dtype="uint16",
        nodata=0,
        border=BORDER,
        descriptions=("B02", "B03", "B04", "B08"),
        seed=5,
    )
    config = BuildConfig(
        shard_size=8,
        batch_size=4,
        workers=0,
        progress=False,
        chips=ChipConfig(chip_size=CHIP, overlap=0.0),
        bands="sentinel2-l2a",
    )
    build(base / "archive", base / "index", tiny_encoder, config)
    return scene, base / "index"


@pytest.fixture(scope="module")
def client(built: tuple[Path, Path], tiny_encoder: ClipEncoder) -> Iterator[httpx.Client]:
    live = LiveServer(make_settings(built[1]), tiny_encoder).start()
    with live.client() as c:
        yield c
    live.stop()


def true_colour(scene: Path) -> NDArray[np.uint8]:
    """The documented rule by hand: B04, B03, B02; reflectance DN / 10,000 - 0.1 (baseline 04.00);
    0 .. 0.3 onto 0 .. 255; a pixel with nodata in any band black."""
    with rasterio.open(scene) as src:
        data = src.read().astype(np.float64)  # B02, B03, B04, B08
    return reflectance_rgb(data[[2, 1, 0]])


def reflectance_rgb(rgb: NDArray[np.float64]) -> NDArray[np.uint8]:
    out = np.clip(np.rint((rgb * 1e-4 - 0.1) * 255 / 0.3), 0, 255).astype(np.uint8)
    out[:, (rgb == 0).any(axis=0)] = 0
    return np.ascontiguousarray(out.transpose(1, 2, 0))


@pytest.mark.parametrize("ident", ["s2.tif/0_0", "s2.tif/1_1"])
def test_a_chip_is_served_with_the_builds_bands_and_rule(
    built: tuple[Path, Path], client: httpx.Client, ident: str
) -> None:
    row, col = (int(v) for v in ident.rsplit("/", 1)[1].split("_"))
    response = client.get(f"/images/{ident}")
    assert response.status_code == 200, response.text
    got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    y, x = row * CHIP, col * CHIP
    assert np.array_equal(got, true_colour(built[0])[y : y + CHIP, x : x + CHIP])


def test_the_served_chip_encodes_to_the_vector_the_version_holds(
    built: tuple[Path, Path], client: httpx.Client, tiny_encoder: ClipEncoder
) -> None:
    version = load_index(built[1])
    ids = ["s2.tif/0_1", "s2.tif/1_0"]
    served = [Image.open(io.BytesIO(client.get(f"/images/{i}").content)).convert("RGB") for i in ids]
    vectors = tiny_encoder.encode_images(served).vectors.numpy()
    rows = [version.gallery.ids.index(i) for i in ids]
    np.testing.assert_allclose(np.asarray(version.gallery.vectors)[rows], vectors, atol=1e-5)


def test_a_stac_items_band_assets_are_served_from_their_own_files(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    # sources.json names one file per chip (the first band's); the other two bands are other files.
    root = tmp_path / "cat"
    for band, seed in (("B04", 1), ("B03", 2), ("B02", 3)):
        write_scene(root / "s2" / f"{band}.tif", 80, 80, count=1, dtype="uint16", seed=seed)
    catalog = stac_catalog(
        root,
        {"s2-item": {"datetime": "2023-05-01T10:00:00Z"}},
        {"s2-item": {b: (f"s2/{b}.tif", "data") for b in ("B04", "B03", "B02")}},
    )
    config = BuildConfig(
        shard_size=8,
        batch_size=4,
        workers=0,
        progress=False,
        chips=ChipConfig(chip_size=CHIP),
        bands="sentinel2-l2a",
    )
    build(catalog, tmp_path / "index", tiny_encoder, config)
    bands = []
    for band in ("B04", "B03", "B02"):
        with rasterio.open(root / "s2" / f"{band}.tif") as src:
            bands.append(src.read(1).astype(np.float64))
    expected = reflectance_rgb(np.stack(bands))
    live = LiveServer(make_settings(tmp_path / "index"), tiny_encoder).start()
    try:
        with live.client() as c:
            response = c.get("/images/s2-item/1_1")  # the window (16, 16, 64, 64): 80 px, last at the edge
            assert response.status_code == 200, response.text
            got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    finally:
        live.stop()
    assert np.array_equal(got, expected[16:80, 16:80])
