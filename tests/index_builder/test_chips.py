"""Grid chipping and footprints: counts computed by hand, corners transformed by independent pyproj calls."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

from rsir.index_builder import chips
from rsir.index_builder.chips import ChipConfig
from rsir.model.errors import DatasetError


def test_grid_matches_hand_computed_offsets() -> None:
    # 500 x 300 raster, 224 px chips, overlap 0.25 -> stride 168.
    # columns: 0, 168, then the last one moved back to 500 - 224 = 276 (ceil(276 / 168) + 1 = 3)
    # rows: 0, then 300 - 224 = 76 (ceil(76 / 168) + 1 = 2)
    cells = chips.grid(500, 300, 224, 0.25)
    assert [(c.row, c.col, c.window) for c in cells] == [
        (0, 0, (0, 0, 224, 224)),
        (0, 1, (168, 0, 224, 224)),
        (0, 2, (276, 0, 224, 224)),
        (1, 0, (0, 76, 224, 224)),
        (1, 1, (168, 76, 224, 224)),
        (1, 2, (276, 76, 224, 224)),
    ]
    # No overlap, an exact fit: 448 / 224 = 2 chips a side, none moved.
    assert [c.window[:2] for c in chips.grid(448, 448, 224, 0.0)] == [(0, 0), (224, 0), (0, 224), (224, 224)]
    # A scene smaller than a chip is one chip of the whole scene.
    assert [c.window for c in chips.grid(100, 50, 224, 0.5)] == [(0, 0, 100, 50)]
    # 12,000 px at 224 and no overlap: ceil(11776 / 224) + 1 = 54 per side.
    assert len(chips.grid(12_000, 12_000, 224, 0.0)) == 54 * 54


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_grid_covers_every_pixel_and_stays_inside(overlap: float) -> None:
    width, height, size = 1000, 700, 128
    covered = np.zeros((height, width), bool)
    for cell in chips.grid(width, height, size, overlap):
        x, y, w, h = cell.window
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height and w == h == size
        covered[y : y + h, x : x + w] = True
    assert covered.all()


def test_gsd_sets_the_source_window() -> None:
    assert chips.source_size(ChipConfig(224, gsd=None), 10.0) == 224
    assert chips.source_size(ChipConfig(224, gsd=1.0), 0.5) == 448  # 224 px of 1 m from 0.5 m pixels
    assert chips.source_size(ChipConfig(224, gsd=30.0), 10.0) == 672  # 6,720 m of 10 m pixels
    assert chips.source_size(ChipConfig(224, gsd=5.0), 10.0) == 112  # upsampled 2x


def test_footprint_corners_match_independent_pyproj_transforms() -> None:
    transform = from_origin(500_000, 4_600_000, 0.5, 0.5)  # 0.5 m pixels in UTM 33N
    windows = [(0, 0, 224, 224), (1000, 2000, 224, 224)]
    shapes = chips.footprints("EPSG:32633", tuple(transform)[:6], windows)
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    for (col, row, w, h), shape in zip(windows, shapes, strict=True):
        corners = [transform @ (col + dx, row + dy) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
        expected = [to_wgs84.transform(x, y) for x, y in corners]
        ring = np.asarray(shape.exterior.coords)
        for lon, lat in expected:  # every corner is a vertex of the outline
            assert np.min(np.hypot(ring[:, 0] - lon, ring[:, 1] - lat)) < 1e-9
        assert shape.is_valid and shape.exterior.is_ccw  # RFC 7946's right-hand rule
        assert shape.area == pytest.approx(shapely.Polygon(expected).area, rel=1e-6)


def test_footprint_crossing_the_antimeridian_is_split_with_west_greater_than_east() -> None:
    # UTM zone 1N (central meridian 177 W): at 10 N, eastings 150-250 km lie on both sides of 180.
    transform = from_origin(150_000, 1_110_000, 100, 100)
    (shape,) = chips.footprints("EPSG:32601", tuple(transform)[:6], [(0, 0, 1000, 1000)])
    to_wgs84 = Transformer.from_crs("EPSG:32601", "EPSG:4326", always_xy=True)
    corners = [
        to_wgs84.transform(*(transform @ (dx, dy))) for dx, dy in ((0, 0), (1000, 0), (1000, 1000), (0, 1000))
    ]
    assert min(c[0] for c in corners) < -170 and max(c[0] for c in corners) > 170  # it does cross
    assert shape.geom_type == "MultiPolygon" and len(shape.geoms) == 2
    assert all(p.exterior.is_ccw and p.is_valid for p in shape.geoms)
    west, south, east, north = chips.bbox(shape)
    assert west == pytest.approx(min(c[0] for c in corners if c[0] > 0))
    assert east == pytest.approx(max(c[0] for c in corners if c[0] < 0))
    assert west > east
    assert south == pytest.approx(min(c[1] for c in corners), abs=1e-3)
    assert north == pytest.approx(max(c[1] for c in corners), abs=1e-3)
    # A WGS84 raster running past 180 (179.5 .. 180.5) is wrapped and split the same way.
    degrees = from_origin(179.5, 10.0, 0.01, 0.01)
    (wrapped,) = chips.footprints("EPSG:4326", tuple(degrees)[:6], [(0, 0, 100, 100)])
    assert chips.bbox(wrapped) == pytest.approx((179.5, 9.0, -179.5, 10.0))
    assert wrapped.area == pytest.approx(1.0)
    # A chip east of the line keeps one polygon and west < east.
    (plain,) = chips.footprints("EPSG:4326", tuple(degrees)[:6], [(0, 0, 40, 40)])
    assert plain.geom_type == "Polygon" and chips.bbox(plain) == pytest.approx((179.5, 9.6, 179.9, 10.0))


def test_unknown_crs_and_bad_options_are_refused() -> None:
    with pytest.raises(DatasetError, match="unknown CRS"):
        chips.footprints("EPSG:999999", (1, 0, 0, 0, -1, 0), [(0, 0, 1, 1)])
    for kwargs, word in (
        ({"overlap": 1.0}, "overlap"),
        ({"chip_size": 2}, "chip-size"),
        ({"gsd": -1.0}, "gsd"),
    ):
        with pytest.raises(DatasetError, match=word):
            ChipConfig(**kwargs)
