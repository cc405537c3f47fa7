"""A tiny archive of georeferenced scenes and an index of their chips, for the geo parts of the service.

Scenes are small tiled GeoTIFFs with overviews written by rasterio (the COG layout): a uint8 RGB
scene in UTM 33N with a nodata border, a uint16 scene in UTM 32N, and a WGS84 scene crossing the
antimeridian. Each is cut on a grid (chip 112 px, overlap 0.25: stride 84, last row and column at the
edge) and the chips are indexed as PNG tiles by the real builder; the version's ``metadata.parquet``
and ``sources.json`` are then written as a scene build records them: per chip its ``scene``,
``window``, bbox and time, and the scene file as its source. (The scene builder lands separately;
this fixture only needs the recorded form.)

Everything the tests expect is kept here from the arrays written, not read back through the code
under test.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

from rsir.index.originals import Original, Sources, write_sources
from rsir.index.scenes import write_scenes
from rsir.index.versions import resolve_version
from rsir.index_builder import metadata as metadata_writer
from rsir.index_builder.build import build
from rsir.index_builder.config import BuildConfig
from rsir.index_builder.metadata import write_metadata
from rsir.index_builder.scenes import PRESETS, open_scene
from rsir.model.encoders import ClipEncoder

CHIP = 112
STRIDE = 84  # round(112 * (1 - 0.25))
NODATA_COLS = 30  # the uint8 scene's left border
# A metadata writer with the scene schema's typed columns (window as 4 ints) once that lands; before
# it, extra columns are text, and a window is written as JSON text (rsir.service.chips reads both).
TYPED = hasattr(metadata_writer, "GEOMETRY")


@dataclass(frozen=True)
class SceneSpec:
    name: str
    pixels: NDArray[np.generic]  # [bands, rows, cols] as written
    crs: str
    transform: Affine
    nodata: float | None
    time: str


@dataclass(frozen=True)
class GeoIndex:
    root: Path
    archive: Path  # the scene files (the archive root of the version's sources.json)
    scenes: dict[str, SceneSpec]
    windows: dict[str, tuple[int, int, int, int]]  # chip id -> window
    scene_of: dict[str, str]  # chip id -> scene name
    bboxes: dict[str, tuple[float, float, float, float]]  # chip id -> (west, south, east, north)

    def scene_file(self, name: str) -> Path:
        return self.archive / f"{name}.tif"

    def chips_of(self, scene: str) -> list[str]:
        return sorted(i for i, s in self.scene_of.items() if s == scene)


def offsets(length: int) -> list[int]:
    if length <= CHIP:
        return [0]
    n = math.ceil((length - CHIP) / STRIDE) + 1
    return [min(i * STRIDE, length - CHIP) for i in range(n)]


def scenes() -> list[SceneSpec]:
    rng = np.random.default_rng(23)
    rows, cols = np.mgrid[0:280, 0:336]
    harbour = np.stack([(rows * 0.9) % 256, (cols * 0.7) % 256, rng.integers(20, 230, (280, 336))]).astype(
        np.uint8
    )
    harbour[:, :, :NODATA_COLS] = 0
    s2 = rng.integers(300, 4000, (3, 224, 280)).astype(np.uint16)
    fiji = rng.integers(0, 256, (3, 224, 224)).astype(np.uint8)
    fiji[fiji == 0] = 1  # no accidental nodata
    return [
        SceneSpec(
            "harbour",
            harbour,
            "EPSG:32633",
            Affine(10, 0, 400_000, 0, -10, 5_100_000),
            0,
            "2024-05-01T10:00:00Z",
        ),
        SceneSpec(
            "s2", s2, "EPSG:32632", Affine(10, 0, 600_000, 0, -10, 5_200_000), None, "2024-06-02T10:30:00Z"
        ),
        SceneSpec(
            "fiji",
            fiji,
            "EPSG:4326",
            Affine(0.0001, 0, 179.995, 0, -0.0001, -16.0),
            None,
            "2024-07-03T22:00:00Z",
        ),
    ]


def write_scene(spec: SceneSpec, path: Path) -> None:
    bands, height, width = spec.pixels.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": spec.pixels.dtype.name,
        "crs": spec.crs,
        "transform": spec.transform,
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
        "nodata": spec.nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(spec.pixels)
        dst.build_overviews([2, 4], Resampling.average)


def chip_bbox(spec: SceneSpec, window: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """The window's corners through the affine transform, reprojected to lon/lat (GDAL's PROJ); a
    chip crossing the antimeridian has its east past 180."""
    col, row, width, height = window
    xs, ys = [], []
    for c, r in ((col, row), (col + width, row), (col + width, row + height), (col, row + height)):
        x, y = spec.transform @ (c, r)
        xs.append(x)
        ys.append(y)
    lons, lats = warp_transform(spec.crs, "EPSG:4326", xs, ys)
    if max(lons) - min(lons) > 180:  # PROJ wraps longitudes past 180 to -180: the east side, unwrapped
        lons = [lon + 360 if lon < 0 else lon for lon in lons]
    return min(lons), min(lats), max(lons), max(lats)


def stretched(spec: SceneSpec) -> NDArray[np.uint8]:
    """The scene as 8-bit RGB by the documented rule, computed here with numpy: uint8 as it is;
    otherwise per band 2nd-98th percentile of valid pixels onto 0-255; nodata black."""
    values = spec.pixels.astype(np.float64)
    valid = (
        np.all(spec.pixels != spec.nodata, axis=0)
        if spec.nodata is not None
        else np.ones(values.shape[1:], bool)
    )
    if spec.pixels.dtype != np.uint8:
        for b in range(values.shape[0]):
            low, high = np.percentile(values[b][valid], [2, 98])
            values[b] = (values[b] - low) * 255.0 / (high - low)
    out = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    out[:, ~valid] = 0
    return out.transpose(1, 2, 0)


def build_geo_index(base: Path, encoder: ClipEncoder) -> GeoIndex:
    archive, tiles, root = base / "scenes", base / "chips", base / "index"
    archive.mkdir(parents=True)
    specs = {s.name: s for s in scenes()}
    windows, scene_of, bboxes, times = {}, {}, {}, {}
    for spec in specs.values():
        write_scene(spec, archive / f"{spec.name}.tif")
        rgb = stretched(spec)
        height, width = rgb.shape[:2]
        (tiles / spec.name).mkdir(parents=True)
        for r, row_off in enumerate(offsets(height)):
            for c, col_off in enumerate(offsets(width)):
                ident = f"{spec.name}/{r}_{c}.png"
                window = (col_off, row_off, min(CHIP, width), min(CHIP, height))
                Image.fromarray(rgb[row_off : row_off + window[3], col_off : col_off + window[2]]).save(
                    tiles / ident
                )
                windows[ident], scene_of[ident], times[ident] = window, spec.name, spec.time
                bboxes[ident] = chip_bbox(spec, window)
    build(tiles, root, encoder, BuildConfig(shard_size=64, batch_size=8, workers=0, progress=False))
    version = resolve_version(root)
    ids = sorted(windows)
    rows = {
        i: {
            "lon_min": bboxes[i][0] - 360 if bboxes[i][0] > 180 else bboxes[i][0],
            "lat_min": bboxes[i][1],
            # RFC 7946: a box crossing the antimeridian has west > east
            "lon_max": bboxes[i][2] - 360 if bboxes[i][2] > 180 else bboxes[i][2],
            "lat_max": bboxes[i][3],
            "time": dt.datetime.fromisoformat(times[i]),
            "scene": scene_of[i],
            "window": list(windows[i]) if TYPED else json.dumps(list(windows[i])),
        }
        for i in ids
    }
    write_metadata(version / "metadata.parquet", ids, rows)
    sizes = {name: (archive / f"{name}.tif").stat().st_size for name in specs}
    entries = {i: Original(f"{scene_of[i]}.tif", None, sizes[scene_of[i]], "0" * 32) for i in ids}
    write_sources(version, Sources(str(archive), entries))
    hrefs = {name: str(archive / f"{name}.tif") for name in specs}
    write_scenes(version, {n: open_scene(n, None, h, PRESETS["rgb"]) for n, h in hrefs.items()}, str(archive))
    return GeoIndex(root, archive, specs, windows, scene_of, bboxes)
