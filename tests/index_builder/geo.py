"""Small georeferenced scenes and STAC catalogs written with rasterio and pystac, for the scene tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pystac
import rasterio
from rasterio.transform import Affine, from_origin


def write_scene(
    path: Path,
    width: int,
    height: int,
    *,
    crs: str | None = "EPSG:32633",
    transform: Affine | None = None,
    count: int = 3,
    dtype: str = "uint8",
    nodata: float | None = None,
    border: int = 0,
    descriptions: Sequence[str] | None = None,
    seed: int = 0,
    tags: dict[str, str] | None = None,
) -> Path:
    """A tiled GeoTIFF with overviews (a COG's layout): random values, and ``border`` pixels of
    ``nodata`` on the left and top edges when ``nodata`` is given."""
    rng = np.random.default_rng(seed)
    top = 255 if dtype == "uint8" else 10_000
    data = rng.integers(1, top, size=(count, height, width)).astype(dtype)
    if nodata is not None and border:
        data[:, :, :border] = nodata
        data[:, :border, :] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
        "nodata": nodata,
    }
    if crs is not None:
        profile |= {"crs": crs, "transform": transform or from_origin(500_000, 4_600_000, 10, 10)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, name)
        if tags:
            dst.update_tags(**tags)
        dst.build_overviews([2, 4])
    return path


def stac_catalog(
    root: Path, scenes: dict[str, dict[str, object]], assets: dict[str, dict[str, tuple[str, str]]]
) -> Path:
    """A self-contained static catalog: item ``id`` with ``properties`` and ``{key: (href, role)}``
    assets (hrefs relative to ``root``, or URLs)."""
    catalog = pystac.Catalog("test-catalog", "scenes for tests")
    for ident, props in scenes.items():
        props = dict(props)
        when = dt.datetime.fromisoformat(str(props.pop("datetime")).replace("Z", "+00:00"))
        item = pystac.Item(ident, {"type": "Point", "coordinates": [0, 0]}, [0, 0, 0, 0], when, props)
        for key, (href, role) in assets[ident].items():
            where = href if "://" in href else str((root / href).resolve())
            item.add_asset(key, pystac.Asset(where, roles=[role]))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root / "stac"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "stac" / "catalog.json"
