"""Listing an archive of georeferenced scenes as chips: a folder of GeoTIFFs/COGs or a STAC catalog.

Each scene's header is read (never its pixels, apart from the decimated read of the percentile stretch
for non-8-bit scenes), cut on the grid of :mod:`rsir.index_builder.chips`, and listed as one
:class:`ArchiveItem` per chip with its metadata row: ``scene``, ``window``, ``footprint`` (WKB, WGS84),
the bbox, ``time``, ``crs``, ``gsd`` and the scene's properties (numbers as numbers). A file that is
not georeferenced (a jpg, png, or plain tif: today's tiles) is a scene of one chip, listed exactly as
:func:`rsir.index_builder.sources.scan_archive` lists it. A scene that cannot be used (no georeference,
unknown CRS, unreadable, absurd size, a STAC asset missing) is reported with the reason, never fatal.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from rsir.index.scenes import BandSource, Scene, is_remote
from rsir.index_builder import chips
from rsir.index_builder.chips import ChipConfig
from rsir.index_builder.scenes import Chip, Preset, open_scene
from rsir.index_builder.sources import IMAGE_SUFFIXES, ArchiveItem
from rsir.model.errors import DatasetError

GEOTIFF_SUFFIXES = frozenset({".tif", ".tiff"})


@dataclass(frozen=True)
class SceneSource:
    """A scene to open: its id, the file whose header describes it, band files (None: the preset's
    bands of ``href``) and properties (STAC's, or none)."""

    id: str
    href: str
    bands: tuple[BandSource, BandSource, BandSource] | None = None
    properties: dict[str, Any] | None = None
    preset: Preset | None = None  # None: the build's ``--bands``


@dataclass
class SceneListing:
    """What a build indexes (``items``), the scenes it cannot use (``skipped``, with reasons) and the
    scenes indexed with something missing (``missing``: no datetime from STAC or the file's tags)."""

    items: list[ArchiveItem]
    skipped: list[dict[str, str]] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)


def list_folder(root: Path, config: ChipConfig, preset: Preset) -> SceneListing:
    """Chips of every georeferenced GeoTIFF under ``root`` (or the single file ``root``), plus every
    other image file as a one-chip tile."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    base = root.parent if root.is_file() else root
    scenes: list[SceneSource] = []
    tiles: list[ArchiveItem] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            continue
        ident = path.relative_to(base).as_posix()
        if suffix in GEOTIFF_SUFFIXES and is_georeferenced(path):
            scenes.append(SceneSource(ident, str(path)))
        else:
            tiles.append(ArchiveItem(ident, path))
    listing = list_scenes(scenes, config, preset)
    listing.items = sorted([*listing.items, *tiles], key=lambda item: item.id)
    return listing


def is_georeferenced(path: Path) -> bool:
    """True when the file has a CRS or a geotransform (unreadable files count as scenes, to be reported)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.crs is not None or not src.transform.is_identity
    except RasterioError:
        return True


def list_scenes(sources: Iterable[SceneSource], config: ChipConfig, preset: Preset) -> SceneListing:
    listing = SceneListing([])
    for source in sources:
        try:
            scene = open_scene(
                source.id, source.bands, source.href, source.preset or preset, source.properties
            )
            listing.items += scene_chips(scene, config)
        except DatasetError as exc:
            listing.skipped.append({"id": source.id, "reason": str(exc)})
            continue
        if not (scene.properties.get("datetime") or scene.properties.get("start_datetime")):
            why = "datetime (no STAC datetime or start_datetime, no TIFFTAG_DATETIME): time unknown"
            listing.missing.append({"id": source.id, "missing": why})
    return listing


def scene_chips(scene: Scene, config: ChipConfig) -> list[ArchiveItem]:
    """The chips of one scene as archive items with their metadata rows."""
    size = chips.source_size(config, scene.pixel_metres)
    cells = chips.grid(scene.width, scene.height, size, config.overlap)
    shapes = chips.footprints(scene.crs, scene.transform, [c.window for c in cells])
    href = scene.bands[0].href
    file_size = 0 if is_remote(href) else _file_size(href)
    common = scene_row(scene, config)
    out = []
    for cell, shape in zip(cells, shapes, strict=True):
        west, south, east, north = chips.bbox(shape)
        meta = {
            **common,
            "window": list(cell.window),
            "footprint": shapely.to_wkb(shape),
            "lon_min": west,
            "lat_min": south,
            "lon_max": east,
            "lat_max": north,
        }
        chip = Chip(scene, cell.row, cell.col, cell.window, config.chip_size, file_size, config.max_nodata)
        out.append(ArchiveItem(f"{scene.id}/{cell.row}_{cell.col}", Path(href), meta=meta, chip=chip))
    return out


def _file_size(href: str) -> int:
    try:
        return os.path.getsize(href)
    except OSError:
        return 0


def scene_row(scene: Scene, config: ChipConfig) -> dict[str, Any]:
    """Metadata every chip of ``scene`` shares: its properties (numbers kept as numbers, lists joined),
    ``scene``, ``crs``, ``gsd``, ``time`` and ``sensor`` (the STAC platform)."""
    row: dict[str, Any] = {}
    for key, value in scene.properties.items():
        if isinstance(value, bool):
            row[key] = str(value).lower()
        elif isinstance(value, int | float):
            row[key] = float(value)
        elif isinstance(value, str):
            row[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            row[key] = ",".join(value)
    row["scene"] = scene.id
    row["crs"] = scene.crs
    row["gsd"] = float(config.gsd) if config.gsd is not None else float(row.get("gsd", scene.pixel_metres))
    when = scene.properties.get("datetime") or scene.properties.get("start_datetime")
    row.pop("datetime", None)
    if when:
        row["time"] = _parse_time(str(when), scene.id)
    if "platform" in row and "sensor" not in row:
        row["sensor"] = row["platform"]
    return row


def _parse_time(value: str, where: str) -> dt.datetime:
    try:
        parsed: dt.datetime = (
            pa.scalar(value.replace("Z", "+00:00")).cast(pa.timestamp("s", tz="UTC")).as_py()
        )
    except (pa.ArrowInvalid, ValueError) as exc:
        raise DatasetError(f"{where}: datetime {value!r} is not ISO 8601 ({exc})") from exc
    return parsed
