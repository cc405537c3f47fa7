"""A georeferenced scene's reading rule and the one windowed read of it as 8-bit RGB, shared by the
builder (which embeds each chip so read) and the service (which serves a chip's pixels so read); and
``scenes.json``, the version's record of that rule per scene.

Reads are windowed, never of the whole raster, so memory does not depend on the scene's size. Paths
are handed to rasterio unchanged: local files and GDAL's virtual file systems (``/vsis3/``,
``/vsicurl/``, ``s3://``, ``https://``) alike.

To 8-bit RGB (:func:`to_rgb`). A reflectance rule (``scale``/``offset``, a band preset's, see
:mod:`rsir.index_builder.scenes`) maps reflectance 0 .. 0.3 linearly onto 0 .. 255 (fixed, so the same
ground looks the same in every scene). Otherwise uint8 bands are taken as they are, and other types
are stretched per band between the recorded ``stretch`` (the scene's 2nd and 98th percentiles of valid
pixels, estimated once at build time). Nodata and masked pixels come out black.

``scenes.json`` (format 1)::

    {"format": 1, "scenes": {"<scene id>": {"bands": [["rel/B04.tif", 1], ["rel/B03.tif", 1], ...],
     "width": 6000, "height": 6000, "crs": "EPSG:32632", "transform": [a, b, c, d, e, f],
     "dtype": "uint16", "nodata": 0, "scale": 0.0001, "offset": -0.1, "stretch": null,
     "pixel_metres": 10.0}}}

Band paths are relative to the archive root of the version's ``sources.json`` (resolved as its entries
are: against the server's ``RSIR_ARCHIVE_ROOT``, else the recorded root); GDAL paths and URLs as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rsir.index.atomic import write_text
from rsir.index.originals import Original, OriginalUnavailableError, Sources, relative_to
from rsir.model.errors import DatasetError

SCENES_FILE = "scenes.json"
FORMAT = 1
# GDAL's cache of decoded blocks while reading: enough for a few block rows of a large COG (neighbouring
# chips share blocks), and a cap, since GDAL's default (5% of RAM) grows the reader's RSS with the
# scene: 1,022 MiB of blocks held after a 20,000 px scene (lab/HISTORY.md, scene build).
GDAL_CACHE_BYTES = 128 * 2**20
REFLECTANCE_MAX = 0.3
_REMOTE = re.compile(r"^(/vsi[a-z0-9_]+/|[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


def is_remote(href: str) -> bool:
    """True for a GDAL virtual file system path or a URL (read over the network, never resolved)."""
    return bool(_REMOTE.match(href))


@dataclass(frozen=True)
class BandSource:
    """One of a scene's R, G, B bands: a file (``href``, passed to GDAL unchanged) and its 1-based band."""

    href: str
    index: int


@dataclass(frozen=True)
class Scene:
    """A georeferenced scene as the chipper and the reader need it (read from headers only).

    ``transform`` is the affine (a, b, c, d, e, f) of pixel -> CRS coordinates, ``crs`` the CRS as
    ``EPSG:n`` or WKT. ``scale``/``offset`` turn DN into reflectance (None: not a reflectance preset);
    ``stretch`` holds each band's (low, high) DN for the percentile rule (None: uint8 as it is, or the
    fixed reflectance rule). ``properties``: the scene's metadata (STAC properties, GeoTIFF tags).
    """

    id: str
    bands: tuple[BandSource, BandSource, BandSource]
    width: int
    height: int
    crs: str
    transform: tuple[float, float, float, float, float, float]
    dtype: str
    nodata: float | None
    scale: float | None = None
    offset: float | None = None
    stretch: tuple[tuple[float, float], ...] | None = None
    pixel_metres: float = float("nan")  # ground size of a pixel in metres (degrees converted at the centre)
    properties: dict[str, Any] = field(default_factory=dict, compare=False)


class OpenRasters:
    """Datasets kept open across reads (the last ``size`` files): neighbouring chips share a COG's
    blocks, and GDAL caches decoded blocks per open dataset, so reopening the file for every chip would
    decode each block again (about 5 times for 224 px chips of 512 px blocks). One per process: a GDAL
    handle is not shared between processes or threads, so pickling (to a loader worker) drops them."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._open: OrderedDict[str, Any] = OrderedDict()

    def get(self, href: str) -> Any:
        if href in self._open:
            self._open.move_to_end(href)
            return self._open[href]
        src = rasterio.open(href)
        self._open[href] = src
        while len(self._open) > self.size:
            self._open.popitem(last=False)[1].close()
        return src

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __enter__(self) -> OpenRasters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["size"])  # type: ignore[misc]


def read_bands(
    rasters: OpenRasters, scene: Scene, window: Window, shape: tuple[int, int], resampling: Resampling
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """``[3,h,w]`` band values and the ``[h,w]`` mask of pixels valid in all three bands."""
    values = np.empty((3, *shape), np.float64)
    valid = np.ones(shape, np.bool_)
    by_file: dict[str, list[int]] = {}
    for c, band in enumerate(scene.bands):
        by_file.setdefault(band.href, []).append(c)
    for href, channels in by_file.items():
        src = rasters.get(href)
        indexes = [scene.bands[c].index for c in channels]
        data = src.read(indexes, window=window, out_shape=(len(indexes), *shape), resampling=resampling)
        values[channels] = data
        # A band without nodata or mask is all valid: asking GDAL would only fill an array with 255.
        if any(src.mask_flag_enums[i - 1] != [MaskFlags.all_valid] for i in indexes):
            masks = src.read_masks(indexes, window=window, out_shape=(len(indexes), *shape))
            valid &= (masks > 0).all(axis=0)
    return values, valid


@dataclass(frozen=True)
class ChipPixels:
    """A chip as read: ``rgb [h,w,3]`` uint8, the fraction of valid pixels, and a digest of the source
    values read (what ``sources.json`` records for a chip)."""

    rgb: NDArray[np.uint8]
    valid_fraction: float
    digest: str


def read_window(
    scene: Scene, window: tuple[int, int, int, int], out_side: int, rasters: OpenRasters | None = None
) -> ChipPixels:
    """The window ``(col_off, row_off, width, height)`` (source pixels) read at ``out_side`` pixels on
    its longer side, as 8-bit RGB by the module's rule, through ``rasters`` (None: files opened for
    this read only). Raises :class:`DatasetError` naming the file."""
    col, row, width, height = window
    if (
        col < 0
        or row < 0
        or width < 1
        or height < 1
        or col + width > scene.width
        or row + height > scene.height
    ):
        raise DatasetError(
            f"{scene.id}: window {window} lies outside the {scene.width} x {scene.height} raster"
        )
    ratio = out_side / max(width, height)
    shape = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    resampling = Resampling.nearest if ratio == 1 else Resampling.bilinear
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            if rasters is None:
                with OpenRasters() as own:
                    values, valid = read_bands(own, scene, Window(col, row, width, height), shape, resampling)
            else:
                values, valid = read_bands(rasters, scene, Window(col, row, width, height), shape, resampling)
    except RasterioError as exc:
        raise DatasetError(f"{scene.bands[0].href}: window {window} cannot be read ({exc})") from exc
    digest = hashlib.sha256(values.tobytes()).hexdigest()[:32]
    return ChipPixels(to_rgb(scene, values, valid), float(valid.mean()), digest)


def to_rgb(scene: Scene, values: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """``[3,h,w]`` DN -> ``[h,w,3]`` uint8 by the scene's rule; invalid pixels black."""
    if scene.scale is not None:
        reflectance = values * scene.scale + (scene.offset or 0.0)
        scaled = reflectance * (255.0 / REFLECTANCE_MAX)
    elif scene.stretch is not None:
        lo = np.array([s[0] for s in scene.stretch])[:, None, None]
        hi = np.array([s[1] for s in scene.stretch])[:, None, None]
        span = np.where(hi > lo, hi - lo, np.inf)
        scaled = (values - lo) * (255.0 / span)
    else:
        scaled = values.copy()
    scaled[:, ~valid] = 0  # before the cast: an invalid pixel may be NaN (a float scene's nodata)
    out = np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(rows, cols)`` of a ``width`` x ``height`` area scaled to fit ``max_side`` (never enlarged)."""
    ratio = min(1.0, max_side / max(width, height))
    return max(1, round(height * ratio)), max(1, round(width * ratio))


# -- scenes.json ------------------------------------------------------------------------------------
def write_scenes(folder: Path, scenes: Mapping[str, Scene], root: str | None) -> None:
    """Record how each scene's chips were read; local band paths relative to ``root`` (the version's
    ``sources.json`` root)."""
    out = {}
    for ident, scene in sorted(scenes.items()):
        record = {k: v for k, v in scene.__dict__.items() if k not in ("id", "bands", "properties")}
        bands = [[_relative(b.href, root), b.index] for b in scene.bands]
        out[ident] = {"bands": bands, **record}
    write_text(Path(folder) / SCENES_FILE, json.dumps({"format": FORMAT, "scenes": out}))


def read_scenes(folder: Path) -> dict[str, Scene]:
    """A version's scenes, band paths as recorded (:func:`locate_scene` resolves them); ``{}`` for a
    version without scenes. Raises :class:`OriginalUnavailableError` for a damaged record."""
    path = Path(folder) / SCENES_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, this rsir reads format {FORMAT}")
        return {str(ident): _scene(str(ident), record) for ident, record in doc["scenes"].items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise OriginalUnavailableError(f"{path}: not a scenes record ({exc})") from exc


def locate_scene(scene: Scene, sources: Sources, archive_root: Path | None = None) -> Scene:
    """``scene`` with its local band paths resolved as ``sources``' entries are (against
    ``archive_root``, else the recorded root); GDAL paths and URLs as they are."""
    bands = tuple(
        b if is_remote(b.href) else BandSource(str(sources.locate(Original(b.href), archive_root)), b.index)
        for b in scene.bands
    )
    return replace(scene, bands=(bands[0], bands[1], bands[2]))


def _scene(ident: str, record: dict[str, Any]) -> Scene:
    bands = [BandSource(str(href), int(i)) for href, i in record["bands"]]
    if len(bands) != 3:
        raise ValueError(f"scene {ident!r}: {len(bands)} bands, not 3")
    stretch = record.get("stretch")
    return Scene(
        id=ident,
        bands=(bands[0], bands[1], bands[2]),
        width=int(record["width"]),
        height=int(record["height"]),
        crs=str(record["crs"]),
        transform=tuple(float(v) for v in record["transform"]),  # type: ignore[arg-type]
        dtype=str(record["dtype"]),
        nodata=_number(record.get("nodata")),
        scale=_number(record.get("scale")),
        offset=_number(record.get("offset")),
        stretch=tuple((float(lo), float(hi)) for lo, hi in stretch) if stretch is not None else None,
        pixel_metres=float(record["pixel_metres"]),
    )


def _relative(href: str, root: str | None) -> str:
    """A local band path relative to ``root``; absolute when outside it (a STAC asset elsewhere)."""
    if is_remote(href):
        return href
    path = Path(href).resolve()
    try:
        return relative_to(Path(root), path) if root is not None else str(path)
    except ValueError:
        return str(path)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
