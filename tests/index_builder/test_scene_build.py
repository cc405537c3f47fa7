"""Builds from georeferenced scenes: chip ids and counts by hand, vectors against the encoder on windows
read independently, nodata chips counted, GeoParquet metadata, STAC in, bad scenes reported, resume, add."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import shapely
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin

from rsir.index.originals import read_sources
from rsir.index.scenes import locate_scene, read_scenes
from rsir.index.versions import load_index
from rsir.index_builder.build import BuildInterruptedError, add, build
from rsir.index_builder.chipper import list_folder
from rsir.index_builder.chips import ChipConfig
from rsir.index_builder.config import BuildConfig
from rsir.index_builder.listing import list_archive
from rsir.index_builder.scenes import PRESETS, read_chip
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import DatasetError
from rsir.search.filters import Filters, filter_mask
from tests.index_builder.geo import stac_catalog, write_scene

CHIPS = ChipConfig(chip_size=64, overlap=0.25, max_nodata=0.5)
SMALL = BuildConfig(shard_size=5, batch_size=3, workers=0, progress=False, chips=CHIPS)


def _archive(root: Path) -> None:
    # 160 x 100 uint8 UTM scene: stride 48 -> columns 0, 48, 96 (last at 160 - 64), rows 0, 36 -> 6 chips.
    write_scene(root / "utm.tif", 160, 100, seed=1)
    # 100 x 100 uint16 WGS84 scene with a 40 px nodata border on the left and top: columns and rows
    # 0, 36 -> 4 chips; nodata fractions by hand: (0,0) 1 - 24*24/4096 = 86%, (0,1) and (1,0)
    # 1 - 60*24/4096 = 65%, (1,1) 1 - 60*60/4096 = 12%: only (1,1) is kept at --max-nodata 0.5.
    write_scene(
        root / "deg" / "wgs.tif",
        100,
        100,
        crs="EPSG:4326",
        transform=from_origin(10.0, 45.0, 0.001, 0.001),
        dtype="uint16",
        nodata=0,
        border=40,
        seed=2,
    )
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(root / "tile.png")  # a plain tile


def test_folder_of_scenes_builds_chips_with_footprints(tmp_path: Path, tiny_encoder: ClipEncoder) -> None:
    _archive(tmp_path / "a")
    report = build(tmp_path / "a", tmp_path / "idx", tiny_encoder, SMALL)
    utm = [f"utm.tif/{r}_{c}" for r in range(2) for c in range(3)]
    assert report.skipped == [] and report.extra["chips"] == 10 and report.extra["chips_nodata"] == 3
    # neither scene has a datetime (no STAC, no TIFFTAG_DATETIME): indexed, and said so
    assert [m["id"] for m in report.extra["scenes_missing"]] == ["deg/wgs.tif", "utm.tif"]
    assert "datetime" in report.extra["scenes_missing"][0]["missing"]
    version = load_index(tmp_path / "idx")
    assert version.gallery.ids == sorted(["deg/wgs.tif/1_1", "tile.png", *utm])

    # Vectors: the encoder on the windows read here with rasterio (uint8: the pixels as they are).
    with rasterio.open(tmp_path / "a" / "utm.tif") as src:
        raw = src.read()
    windows = {"utm.tif/0_2": (96, 0), "utm.tif/1_1": (48, 36)}
    images = [Image.fromarray(raw[:, y : y + 64, x : x + 64].transpose(1, 2, 0)) for x, y in windows.values()]
    direct = tiny_encoder.encode_images(images).vectors.numpy()
    rows = [version.gallery.ids.index(i) for i in windows]
    np.testing.assert_allclose(version.gallery.vectors[rows], direct, atol=1e-5)

    # Metadata: GeoParquet with the geo file metadata, footprints through independent pyproj calls.
    path = version.folder / "metadata.parquet"
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["primary_column"] == "footprint" and geo["version"].startswith("1.")
    column = geo["columns"]["footprint"]
    assert column["encoding"] == "WKB" and column["crs"]["id"]["code"] == "CRS84"
    meta = version.metadata
    assert meta.footprint is not None and meta.scene is not None and meta.window is not None
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    transform = from_origin(500_000, 4_600_000, 10, 10)
    i = version.gallery.ids.index("utm.tif/1_1")
    corners = [
        to_wgs84.transform(*(transform @ (x, y))) for x, y in ((48, 36), (112, 36), (112, 100), (48, 100))
    ]
    ring = np.asarray(meta.footprint[i].exterior.coords)
    for lon, lat in corners:
        assert np.min(np.hypot(ring[:, 0] - lon, ring[:, 1] - lat)) < 1e-9
    assert column["bbox"][0] == pytest.approx(10.036)  # the WGS84 chip is the westmost
    assert meta.scene[i] == "utm.tif" and meta.window[i].tolist() == [48, 36, 64, 64]
    assert meta.numeric["gsd"][i] == 10.0
    row = meta.row(i)
    assert row["scene"] == "utm.tif" and row["window"] == [48, 36, 64, 64] and row["crs"] == "EPSG:32633"
    assert row["footprint"]["type"] == "Polygon"
    j = version.gallery.ids.index("deg/wgs.tif/1_1")
    assert meta.row(j)["bbox"] == pytest.approx([10.036, 44.9, 10.1, 44.964])
    tile = version.gallery.ids.index("tile.png")
    assert meta.row(tile) == {"bbox": None, "time": None, "sensor": None, "tags": []}  # as before scenes
    # Filters over the built metadata: a scene, and a point inside one chip only.
    assert filter_mask(meta, Filters(scenes=("deg/wgs.tif",))).tolist() == [x == j for x in range(len(meta))]
    inside = {"type": "Point", "coordinates": [10.05, 44.93]}
    assert np.flatnonzero(filter_mask(meta, Filters(intersects=inside))).tolist() == [j]

    # sources.json: a chip points at its scene's file with the file's size.
    sources = read_sources(version.folder)
    entry = sources.items["utm.tif/1_1"]
    assert entry.path == "utm.tif" and entry.size == (tmp_path / "a" / "utm.tif").stat().st_size


def test_without_chip_options_a_folder_is_listed_as_before(tmp_path: Path, tiny_encoder: ClipEncoder) -> None:
    _archive(tmp_path / "a")
    plain = dataclasses.replace(SMALL, chips=None)
    report = build(tmp_path / "a", tmp_path / "idx", tiny_encoder, plain)
    assert load_index(tmp_path / "idx").gallery.ids == ["deg/wgs.tif", "tile.png", "utm.tif"]
    assert report.extra == {}
    meta = pq.read_schema(load_index(tmp_path / "idx").folder / "metadata.parquet").metadata
    assert meta is None or b"geo" not in meta


def test_a_12000_pixel_scene_is_chipped_not_skipped(tmp_path: Path) -> None:
    profile = {"driver": "GTiff", "width": 12_000, "height": 12_000, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32633", "transform": from_origin(500_000, 4_600_000, 0.5, 0.5)}
    with rasterio.open(tmp_path / "big.tif", "w", tiled=True, sparse_ok=True, **profile):
        pass  # declared only: listing reads headers, not pixels
    listing = list_folder(tmp_path / "big.tif", ChipConfig(224), PRESETS["rgb"])
    assert listing.skipped == [] and len(listing.items) == 54 * 54  # ceil(11776 / 224) + 1 = 54
    last = {item.id: item for item in listing.items}["big.tif/53_53"]
    assert last.chip is not None and last.chip.window == (11776, 11776, 224, 224)  # 12,000 - 224


def test_stac_catalog_builds_and_reports_items_it_cannot_read(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    root = tmp_path / "cat"
    for band, seed in (("B04", 1), ("B03", 2), ("B02", 3)):
        write_scene(root / "s2" / f"{band}.tif", 80, 80, count=1, dtype="uint16", seed=seed)
    write_scene(root / "vis" / "visual.tif", 64, 64)
    catalog = stac_catalog(
        root,
        {
            "s2-item": {
                "datetime": "2023-05-01T10:00:00Z",
                "eo:cloud_cover": 12.5,
                "platform": "sentinel-2a",
            },
            "visual-item": {"datetime": "2022-01-02T00:00:00Z", "eo:cloud_cover": 40, "gsd": 0.6},
            "gone-item": {"datetime": "2022-01-02T00:00:00Z"},
            "no-assets": {"datetime": "2022-01-02T00:00:00Z"},
        },
        {
            "s2-item": {b: (f"s2/{b}.tif", "data") for b in ("B04", "B03", "B02")},
            "visual-item": {"visual": ("vis/visual.tif", "visual")},
            "gone-item": {"visual": ("vis/missing.tif", "visual")},
            "no-assets": {"thumbnail": ("vis/visual.tif", "thumbnail")},
        },
    )
    config = dataclasses.replace(SMALL, bands="sentinel2-l2a")
    report = build(catalog, tmp_path / "idx", tiny_encoder, config)
    reasons = {s["id"]: s["reason"] for s in report.skipped}
    assert reasons.keys() == {"gone-item", "no-assets"}
    assert "missing.tif" in reasons["gone-item"] and "no asset to read" in reasons["no-assets"]
    version = load_index(tmp_path / "idx")
    # 80 px at 64 / stride 48: offsets 0, 16 -> 4 chips; the 64 px visual asset: 1 chip.
    assert version.gallery.ids == [
        *(f"s2-item/{r}_{c}" for r in range(2) for c in range(2)),
        "visual-item/0_0",
    ]
    meta = version.metadata
    assert meta.numeric["eo:cloud_cover"].tolist() == [12.5] * 4 + [40.0]
    assert meta.numeric["gsd"].tolist() == [10.0] * 4 + [0.6]  # the item's gsd wins over the pixel size
    assert meta.row(0)["time"] == "2023-05-01T10:00:00Z" and meta.row(0)["sensor"] == "sentinel-2a"
    cloudless = Filters(ranges={"eo:cloud_cover": {"lte": 20}})
    assert filter_mask(meta, cloudless).tolist() == [True] * 4 + [False]


def test_item_collection_and_a_scene_across_the_antimeridian(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    # UTM zone 1N, 1 km pixels from easting 150 km at 10 N: 100 px span 179.2 E .. 179.9 W.
    path = write_scene(
        tmp_path / "am.tif", 100, 100, crs="EPSG:32601", transform=from_origin(150_000, 1_110_000, 1000, 1000)
    )
    item = pystac.Item("am", None, None, dt.datetime(2024, 3, 1, tzinfo=dt.UTC), {"eo:cloud_cover": 5})
    item.add_asset("visual", pystac.Asset(str(path), roles=["visual"]))
    pystac.ItemCollection([item]).save_object(str(tmp_path / "items.json"))
    report = build(tmp_path / "items.json", tmp_path / "idx", tiny_encoder, SMALL)
    assert report.skipped == []
    version = load_index(tmp_path / "idx")
    assert version.gallery.ids == [f"am/{r}_{c}" for r in range(2) for c in range(2)]
    meta = version.metadata
    assert meta.footprint is not None
    to_wgs84 = Transformer.from_crs("EPSG:32601", "EPSG:4326", always_xy=True)
    for i, (x, y) in enumerate([(0, 0), (36, 0), (0, 36), (36, 36)]):
        lons = [to_wgs84.transform(150_000 + 1000 * (x + dx), 1_110_000 - 1000 * y)[0] for dx in (0, 64)]
        crosses = lons[0] > 0 > lons[1]  # west edge east of 180, east edge west of it
        assert (meta.footprint[i].geom_type == "MultiPolygon") == crosses
        if crosses:
            assert meta.lon_min[i] > meta.lon_max[i]  # bbox west > east
    assert any(g.geom_type == "MultiPolygon" for g in meta.footprint)
    east_of_line = filter_mask(meta, Filters(bbox=(-179.9, 9.0, -179.5, 11.0)))
    across = filter_mask(meta, Filters(bbox=(179.9, 9.0, -179.9, 11.0)))
    expected = [bool(shapely.intersects(g, shapely.box(-179.9, 9.0, -179.5, 11.0))) for g in meta.footprint]
    assert east_of_line.tolist() == expected and any(expected)
    assert across.tolist() == [g.geom_type == "MultiPolygon" for g in meta.footprint]
    assert meta.numeric["eo:cloud_cover"].tolist() == [5.0] * 4


def test_stac_catalog_by_url_through_pystacs_stacio(tmp_path: Path) -> None:
    """The catalog read over HTTP by pystac; its assets are file:// URLs (Python's test server cannot
    answer GDAL's range requests)."""
    scene = write_scene(tmp_path / "vis" / "visual.tif", 64, 64)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    asset = ("file://" + str(scene.resolve()), "visual")
    stac_catalog(
        tmp_path,
        {"one": {"datetime": "2022-01-02T00:00:00Z"}, "two": {"datetime": "2022-01-03T00:00:00Z"}},
        {"one": {"visual": asset}, "two": {"visual": asset}},
    )
    try:
        listing = list_archive(Path(f"{base}/stac/catalog.json"), SMALL)  # a Path folds "//"
        items = listing.items
        assert listing.skipped == [] and [i.id for i in items] == ["one/0_0", "two/0_0"]
        chip = items[0].chip
        assert chip is not None and chip.scene.bands[0].href == asset[0]
        with rasterio.open(scene) as src:
            np.testing.assert_array_equal(read_chip(chip).rgb, src.read().transpose(1, 2, 0))
        with pytest.raises(DatasetError, match=r"nothing\.json: not a readable STAC catalog"):
            list_archive(Path(f"{base}/stac/nothing.json"), SMALL)
    finally:
        server.shutdown()
        server.server_close()


def test_scene_build_resumes_and_add_keeps_the_base_metadata(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    _archive(tmp_path / "a")
    build(tmp_path / "a", tmp_path / "whole", tiny_encoder, SMALL)
    with pytest.raises(BuildInterruptedError):
        build(
            tmp_path / "a",
            tmp_path / "resumed",
            tiny_encoder,
            dataclasses.replace(SMALL, stop_after_shards=1),
        )
    report = build(tmp_path / "a", tmp_path / "resumed", tiny_encoder, SMALL)
    assert report.shards_reused == 1
    whole, resumed = load_index(tmp_path / "whole"), load_index(tmp_path / "resumed")
    assert whole.gallery.ids == resumed.gallery.ids
    np.testing.assert_array_equal(np.asarray(whole.gallery.vectors), np.asarray(resumed.gallery.vectors))

    write_scene(tmp_path / "b" / "more.tif", 64, 64, seed=5)
    add(tmp_path / "b", tmp_path / "whole", tiny_encoder, SMALL)
    v2 = load_index(tmp_path / "whole")
    assert v2.gallery.ids == [*whole.gallery.ids, "more.tif/0_0"]
    assert v2.metadata.footprint is not None and whole.metadata.footprint is not None
    for i in range(len(whole.gallery.ids)):  # the first version's chips keep their footprints
        a, b = v2.metadata.footprint[i], whole.metadata.footprint[i]
        assert (a is None and b is None) or shapely.equals(a, b)
    assert v2.metadata.row(len(v2.gallery.ids) - 1)["scene"] == "more.tif"
    # scenes.json: the base version's scenes carried, their paths under the widened archive root.
    first = {i: locate_scene(s, read_sources(whole.folder)) for i, s in read_scenes(whole.folder).items()}
    now = {i: locate_scene(s, read_sources(v2.folder)) for i, s in read_scenes(v2.folder).items()}
    assert sorted(now) == ["deg/wgs.tif", "more.tif", "utm.tif"]
    assert read_sources(v2.folder).root == str(tmp_path.resolve())
    assert now["utm.tif"] == first["utm.tif"] and now["deg/wgs.tif"] == first["deg/wgs.tif"]
    assert now["more.tif"].bands[0].href == str((tmp_path / "b" / "more.tif").resolve())


@pytest.mark.slow
def test_cli_chips_a_folder_of_scenes(tmp_path: Path) -> None:
    _archive(tmp_path / "a")
    cmd = [
        sys.executable, "-m", "rsir.cli", "build-index", "--archive", str(tmp_path / "a"),
        "--out", str(tmp_path / "i"), "--device", "cpu", "--workers", "0",
        "--chip-size", "64", "--overlap", "0.25", "--max-nodata", "0.5",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "10 chips listed, 3 left out as mostly nodata" in done.stdout
    assert len(load_index(tmp_path / "i").gallery.ids) == 8
