"""Georeferenced scenes (GeoTIFF / COG) as the builder opens them: band presets, a scene's header read
into its reading rule (:class:`rsir.index.scenes.Scene`), the percentile stretch, and a chip to read.

The windowed read itself is :func:`rsir.index.scenes.read_window`, the one the service also serves a chip's
pixels with, from the rule this build records in the version's ``scenes.json``.

Bands. ``--bands`` takes a preset name or a comma list of 1-based indexes or band names (a name is
matched against the file's band descriptions; a STAC item's band assets are matched by asset key in
:mod:`rsir.index_builder.stac`). Presets:

- ``rgb``: bands 1, 2, 3 (any plain RGB GeoTIFF);
- ``naip``: bands 1, 2, 3 of NAIP's 4-band uint8 (band 4 is near infrared);
- ``sentinel2-l2a``: B04, B03, B02 (true colour), reflectance = (DN - 1000) / 10,000, the offset of
  processing baseline 04.00 and later (since 2022); a STAC item with ``s2:processing_baseline`` below
  ``04.00`` gets no offset;
- ``landsat-c2-l2``: SR_B4, SR_B3, SR_B2, reflectance = DN x 0.0000275 - 0.2.

To 8-bit RGB (:func:`rsir.index.scenes.to_rgb`): a reflectance preset maps reflectance 0 .. 0.3 onto
0 .. 255; uint8 bands are taken as they are; other types are stretched per band from the scene's 2nd
to its 98th percentile of *valid* pixels (nodata and masked pixels left out), estimated here once per
scene from a decimated read of at most ``STATS_SIDE`` pixels a side (GDAL serves it from the COG's
overviews). Nodata pixels come out black.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.windows import Window

from rsir.index.scenes import (
    GDAL_CACHE_BYTES,
    BandSource,
    ChipPixels,
    OpenRasters,
    Scene,
    read_bands,
    read_window,
)
from rsir.model.errors import DatasetError

STATS_SIDE = 1024
# A scene of more pixels than this is refused: its header is a mistake or an attack (declared size),
# not an archive; 50,000 x 50,000 is already larger than any single satellite scene.
MAX_SCENE_PIXELS = 50_000 * 50_000


@dataclass(frozen=True)
class Preset:
    """Bands (1-based index or name) for R, G, B, and the DN -> reflectance rule (None: no rule)."""

    bands: tuple[int | str, int | str, int | str]
    scale: float | None = None
    offset: float | None = None


PRESETS: dict[str, Preset] = {
    "rgb": Preset((1, 2, 3)),
    "naip": Preset((1, 2, 3)),
    "sentinel2-l2a": Preset(("B04", "B03", "B02"), scale=1e-4, offset=-0.1),
    "landsat-c2-l2": Preset(("SR_B4", "SR_B3", "SR_B2"), scale=2.75e-5, offset=-0.2),
}


def parse_bands(spec: str) -> Preset:
    """A ``--bands`` value: a preset name, or three comma-separated 1-based indexes or band names."""
    spec = spec.strip()
    if spec.lower() in PRESETS:
        return PRESETS[spec.lower()]
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) != 3:
        raise DatasetError(
            f"--bands {spec!r}: give a preset ({', '.join(PRESETS)}) or three bands for R,G,B, e.g. 4,3,2"
        )
    picked: list[int | str] = [int(p) if p.isdigit() else p for p in parts]
    if any(isinstance(p, int) and p < 1 for p in picked):
        raise DatasetError(f"--bands {spec!r}: band indexes are 1-based")
    return Preset((picked[0], picked[1], picked[2]))


def open_scene(
    scene_id: str,
    bands: Sequence[BandSource] | None,
    href: str,
    preset: Preset,
    properties: dict[str, Any] | None = None,
) -> Scene:
    """Read ``href``'s header into a :class:`Scene`; ``bands`` (e.g. a STAC item's band assets) overrides
    the preset's band choice. Raises :class:`DatasetError` naming the file and what is wrong."""
    props = dict(properties or {})
    try:
        with rasterio.open(href) as src:
            if src.crs is None or src.transform.is_identity:
                raise DatasetError(f"{href}: no georeference (no CRS or geotransform); not a scene")
            try:
                crs = _crs_name(src.crs)
            except Exception as exc:  # pyproj/GDAL raise several types for a CRS they cannot use
                raise DatasetError(f"{href}: unknown CRS ({exc})") from exc
            if src.width * src.height > MAX_SCENE_PIXELS:
                raise DatasetError(
                    f"{href}: declares {src.width} x {src.height} pixels, over the limit of "
                    f"{MAX_SCENE_PIXELS} per scene"
                )
            chosen = (
                tuple(bands) if bands else tuple(BandSource(href, _band_index(src, b)) for b in preset.bands)
            )
            pixel_metres = _pixel_metres(src)
            tags = src.tags()
            if "TIFFTAG_DATETIME" in tags and "datetime" not in props:
                props["datetime"] = _tiff_time(tags["TIFFTAG_DATETIME"])
            scene = Scene(
                id=scene_id,
                bands=(chosen[0], chosen[1], chosen[2]),
                width=src.width,
                height=src.height,
                crs=crs,
                transform=tuple(src.transform)[:6],
                dtype=src.dtypes[chosen[0].index - 1] if chosen[0].href == href else src.dtypes[0],
                nodata=src.nodata,
                pixel_metres=pixel_metres,
                scale=preset.scale,
                offset=_offset(preset, props),
                properties=props,
            )
    except RasterioError as exc:
        raise DatasetError(f"{href}: cannot be read as a raster ({exc})") from exc
    if scene.scale is None and scene.dtype != "uint8":
        scene = _with_stretch(scene)
    return scene


def _pixel_metres(src: Any) -> float:
    a, b, _, d, e, _ = tuple(src.transform)[:6]
    size = max(math.hypot(a, d), math.hypot(b, e))
    if src.crs.is_geographic:
        lat = src.xy(src.height / 2, src.width / 2)[1]
        return float(size * 111_320 * math.cos(math.radians(max(-89.0, min(89.0, lat)))))
    try:
        return float(size * src.crs.linear_units_factor[1])
    except CRSError:  # an engineering (local) CRS: no ground unit; chipping reports the CRS unusable
        return float("nan")


def _crs_name(crs: Any) -> str:
    epsg = crs.to_epsg()
    if epsg is not None:
        return f"EPSG:{epsg}"
    from pyproj import CRS

    return str(CRS.from_wkt(crs.to_wkt()).to_wkt())


def _band_index(src: Any, band: int | str) -> int:
    if isinstance(band, int):
        if not 1 <= band <= src.count:
            raise DatasetError(f"{src.name}: has {src.count} bands, no band {band}")
        return band
    names = [(d or "").strip().lower() for d in src.descriptions]
    if band.lower() in names:
        return names.index(band.lower()) + 1
    raise DatasetError(f"{src.name}: no band described as {band!r} (descriptions: {list(src.descriptions)})")


def _tiff_time(value: str) -> str:
    """TIFF's ``YYYY:MM:DD HH:MM:SS`` (no zone, taken as UTC) as ISO 8601."""
    try:
        parsed = dt.datetime.strptime(value.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return value
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def _offset(preset: Preset, props: dict[str, Any]) -> float | None:
    baseline = props.get("s2:processing_baseline")
    if preset is PRESETS["sentinel2-l2a"] and baseline is not None:
        try:
            return preset.offset if float(baseline) >= 4.0 else 0.0
        except ValueError:
            pass
    return preset.offset


def _with_stretch(scene: Scene) -> Scene:
    """The scene with per-band 2-98 percentiles of valid pixels from a decimated read."""
    factor = max(scene.width, scene.height) / STATS_SIDE
    shape = (max(1, round(scene.height / max(factor, 1))), max(1, round(scene.width / max(factor, 1))))
    window = Window(0, 0, scene.width, scene.height)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), OpenRasters() as rasters:
        values, valid = read_bands(rasters, scene, window, shape, Resampling.nearest)
    stretch = []
    for c in range(3):
        band = values[c][valid]
        lo, hi = np.percentile(band, [2, 98]) if band.size else (0.0, 0.0)
        stretch.append((float(lo), float(hi)))
    return Scene(**{**scene.__dict__, "stretch": tuple(stretch)})


@dataclass(frozen=True)
class Chip:
    """One chip of a scene: grid ``row``/``col``, ``window`` (col_off, row_off, width, height) in source
    pixels, read at ``out_side`` pixels on its longer side; ``file_size`` of the scene's first band
    file (0: remote)."""

    scene: Scene
    row: int
    col: int
    window: tuple[int, int, int, int]
    out_side: int
    file_size: int = 0
    max_nodata: float = 0.5  # a chip with more nodata than this fraction is left out


def read_chip(chip: Chip, rasters: OpenRasters | None = None) -> ChipPixels:
    return read_window(chip.scene, chip.window, chip.out_side, rasters)
