"""Reading a version's ``metadata.parquet`` (written by :mod:`rsir.index_builder.metadata`) into columns.

Columns written for scenes' chips (``footprint`` WKB, ``scene``, ``window``, float properties) are
read into :class:`MetadataColumns`' geo fields; a file without them (a version built before scenes)
loads with them unknown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from numpy.typing import NDArray

from rsir.index.columns import TIME_UNKNOWN, MetadataColumns
from rsir.index.errors import IndexFormatError

METADATA_FILE = "metadata.parquet"
_KNOWN = frozenset(
    {
        "id",
        "lon_min",
        "lat_min",
        "lon_max",
        "lat_max",
        "time",
        "sensor",
        "tags",
        "footprint",
        "scene",
        "window",
    }
)
_NO_TAGS: frozenset[str] = frozenset()


def _tag_key(tags: list[str] | None) -> tuple[str, ...]:
    return tuple(tags) if tags else ()


def load_metadata(folder: Path, n_images: int) -> MetadataColumns:
    """The metadata of a version's ``n_images`` images, in gallery order; all unknown without the file."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return MetadataColumns.empty(n_images)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise IndexFormatError(f"{path} cannot be read: {exc}") from exc
    if table.num_rows != n_images:
        raise IndexFormatError(f"{path} has {table.num_rows} rows but the index holds {n_images} images")
    return columns_from_table(table)


def columns_from_table(table: pa.Table) -> MetadataColumns:
    """Columns of a metadata table; a column the table lacks is all unknown."""
    n = table.num_rows
    names = set(table.column_names)

    def floats(name: str) -> NDArray[np.float64]:
        if name not in names:
            return np.full(n, np.nan)
        column = table.column(name).cast(pa.float64())
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)  # nulls -> NaN

    def strings(name: str) -> NDArray[np.object_]:
        out = np.full(n, None, dtype=object)
        if name in names:
            out[:] = table.column(name).cast(pa.string()).to_pylist()
        return out

    time = np.full(n, TIME_UNKNOWN, np.int64)
    if "time" in names:
        seconds = pc.cast(table.column("time"), pa.timestamp("s", tz="UTC")).cast(pa.int64())
        time = np.asarray(seconds.fill_null(TIME_UNKNOWN).to_numpy(zero_copy_only=False), dtype=np.int64)
    tags: list[frozenset[str]] = [_NO_TAGS] * n
    column = table.column("tags") if "tags" in names else None
    if column is not None and column.null_count < n:  # all null (no tags given): nothing to convert
        # Equal tag sets share one frozenset, and untagged rows the empty one: a million rows of a
        # few distinct sets cost a dict lookup each, not a set each.
        seen: dict[tuple[str, ...], frozenset[str]] = {(): _NO_TAGS}
        tags = [
            seen.get(key) or seen.setdefault(key, frozenset(key)) for key in map(_tag_key, column.to_pylist())
        ]
    footprint = None
    if "footprint" in names:
        try:
            footprint = np.asarray(shapely.from_wkb(table.column("footprint").to_pylist()), dtype=object)
        except shapely.errors.GEOSException as exc:
            raise IndexFormatError(f"metadata footprints are not valid WKB: {exc}") from exc
    window = None
    if "window" in names:
        window = np.full((n, 4), -1, np.int64)
        for i, w in enumerate(table.column("window").to_pylist()):
            if w is not None and len(w) == 4:
                window[i] = w
    numeric = {
        name: floats(name)
        for name in table.column_names
        if name not in _KNOWN
        and (
            pa.types.is_floating(table.schema.field(name).type)
            or pa.types.is_integer(table.schema.field(name).type)
        )
    }
    return MetadataColumns(
        lon_min=floats("lon_min"),
        lat_min=floats("lat_min"),
        lon_max=floats("lon_max"),
        lat_max=floats("lat_max"),
        time=time,
        sensor=strings("sensor"),
        tags=tags,
        extra={
            name: strings(name) for name in table.column_names if name not in _KNOWN and name not in numeric
        },
        footprint=footprint,
        scene=strings("scene") if "scene" in names else None,
        window=window,
        numeric=numeric,
    )
