"""A STAC catalog, collection or ItemCollection as scenes to chip (pystac reads them; an http(s) URL goes
through pystac's default StacIO where the network reaches it).

Which assets an item's scene reads, first match wins:

1. the preset's bands as separate assets, by key (``B04``, ``SR_B4``) or by their common name
   (``red``, ``green``, ``blue``, as Earth Search names them), one band file each;
2. a ``visual`` asset (by key or role): a ready RGB COG, read as plain ``rgb``;
3. the first asset with role ``data`` (or a GeoTIFF media type), with the preset's band indexes.

An item with none of these is reported (its id and what is missing). The item's properties become the
chips' metadata (``datetime`` or ``start_datetime``, ``eo:cloud_cover``, ``gsd``, ``platform``,
``proj:epsg`` / ``proj:code`` ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac

from rsir.index.scenes import BandSource
from rsir.index_builder.chipper import SceneSource
from rsir.index_builder.scenes import PRESETS, Preset
from rsir.model.errors import DatasetError

COMMON_NAMES = {
    "B04": "red",
    "B03": "green",
    "B02": "blue",
    "SR_B4": "red",
    "SR_B3": "green",
    "SR_B2": "blue",
}
STAC_TYPES = frozenset({"Catalog", "Collection", "FeatureCollection", "Feature"})


def is_stac(path: Path) -> bool:
    """True for a JSON file that is a STAC object (a Karpathy caption file is not)."""
    path = Path(path)
    if not (path.is_file() and path.suffix == ".json"):
        return False
    try:
        with path.open(encoding="utf-8") as fh:
            head = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and ("stac_version" in head or head.get("type") in STAC_TYPES - {"Feature"})


def stac_scenes(href: str, preset: Preset) -> tuple[list[SceneSource], list[dict[str, str]]]:
    """The scenes of the STAC object at ``href`` and the items that cannot be used, with reasons."""
    scenes: list[SceneSource] = []
    skipped: list[dict[str, str]] = []
    for item in _items(href):
        try:
            scenes.append(_scene(item, preset))
        except DatasetError as exc:
            skipped.append({"id": item.id, "reason": str(exc)})
    ids = [s.id for s in scenes]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{href}: two items share an id; STAC item ids must be unique in an archive")
    return scenes, skipped


def stac_url(archive: Path | str) -> str | None:
    """``archive`` as an http(s) URL when it is one (a ``Path`` folds ``https://`` to ``https:/``)."""
    match = re.match(r"^(https?):/+(.+)$", str(archive))
    return f"{match[1]}://{match[2]}" if match else None


def _items(href: str) -> Iterator[pystac.Item]:
    try:
        doc = pystac.StacIO.default().read_json(href)
    except Exception as exc:  # pystac raises a bare Exception for a URI it cannot read
        raise DatasetError(f"{href}: not a readable STAC catalog ({exc})") from exc
    try:
        if doc.get("type") == "FeatureCollection":
            yield from pystac.ItemCollection.from_file(href)  # resolves relative asset hrefs
            return
        obj = pystac.read_dict(doc, href=href)
        if isinstance(obj, pystac.Item):
            yield obj
        elif isinstance(obj, pystac.Catalog):  # a Collection is a Catalog
            yield from obj.get_items(recursive=True)
        else:
            raise DatasetError(f"{href}: a STAC {type(obj).__name__} holds no items to index")
    except (pystac.STACError, OSError, ValueError, KeyError, AttributeError) as exc:
        raise DatasetError(f"{href}: not a readable STAC catalog ({exc})") from exc


def _scene(item: pystac.Item, preset: Preset) -> SceneSource:
    props = dict(item.properties)
    assets = item.assets
    if all(isinstance(b, str) for b in preset.bands):
        keys = [_band_key(assets, str(b)) for b in preset.bands]
        if all(k is not None for k in keys):
            bands = tuple(BandSource(_href(assets[str(k)]), 1) for k in keys)
            return SceneSource(item.id, bands[0].href, (bands[0], bands[1], bands[2]), props)
    for key, asset in assets.items():
        if key == "visual" or "visual" in (asset.roles or []):
            return SceneSource(item.id, _href(asset), None, props, PRESETS["rgb"])
    indexed = all(isinstance(b, int) for b in preset.bands)
    for asset in assets.values():
        if indexed and ("data" in (asset.roles or []) or "tiff" in (asset.media_type or "")):
            return SceneSource(item.id, _href(asset), None, props)
    wanted = ", ".join(str(b) for b in preset.bands)
    raise DatasetError(
        f"STAC item {item.id}: no asset to read (wanted bands {wanted} as assets, a 'visual' asset, "
        f"or a 'data' asset; has {sorted(assets)})"
    )


def _band_key(assets: dict[str, Any], band: str) -> str | None:
    for key in (band, COMMON_NAMES.get(band)):
        if key is not None and key in assets:
            return key
    return None


def _href(asset: pystac.Asset) -> str:
    href = asset.get_absolute_href() or asset.href
    return str(href)
