"""What a build indexes: the archive's items, and the scenes it could not use (with reasons).

Without chipping options an archive is listed by :func:`rsir.index_builder.sources.scan_archive`, exactly
as before scenes existed. With them (``BuildConfig.chips``), or when the archive is a STAC catalog,
georeferenced scenes are cut into chips (:mod:`rsir.index_builder.chipper`); a caption JSON or tar shards
are still tiles.
"""

from __future__ import annotations

from pathlib import Path

from rsir.index_builder.chipper import SceneListing, list_folder, list_scenes
from rsir.index_builder.chips import ChipConfig
from rsir.index_builder.config import BuildConfig
from rsir.index_builder.scenes import parse_bands
from rsir.index_builder.sources import scan_archive
from rsir.index_builder.stac import is_stac, stac_scenes, stac_url
from rsir.model.errors import DatasetError


def list_archive(archive: Path, config: BuildConfig) -> SceneListing:
    """The items of ``archive`` sorted by id, the scenes left out with their reasons, and the scenes
    indexed with something missing."""
    archive = Path(archive)
    url = stac_url(archive)
    stac = url is not None or is_stac(archive)
    if config.chips is None and not stac:
        return SceneListing(scan_archive(archive, config.split))
    chips = config.chips or ChipConfig()
    preset = parse_bands(config.bands)
    if stac:
        scenes, skipped = stac_scenes(url or str(archive), preset)
        listing = list_scenes(scenes, chips, preset)
        listing.items.sort(key=lambda item: item.id)
        listing.skipped[:0] = skipped
        return listing
    if not archive.exists():
        raise DatasetError(f"archive {archive} does not exist")
    folder = archive.is_dir() and not any(archive.glob("*.tar")) and not (archive / "dataset.json").is_file()
    if folder or (archive.is_file() and archive.suffix.lower() in (".tif", ".tiff")):
        return list_folder(archive, chips, preset)
    return SceneListing(scan_archive(archive, config.split))
