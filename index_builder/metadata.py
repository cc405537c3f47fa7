"""Per-image metadata: read from CSV or JSONL, written in gallery order as a Parquet (columnar) file.

Recognised columns (all optional except ``id``): ``id`` (the image id as the archive lists it, e.g.
its relative path), ``lon_min, lat_min, lon_max, lat_max`` (footprint bbox, degrees), ``time``
(acquisition time, ISO 8601), ``sensor``, ``tags`` (a list in JSONL; ``;``-separated in CSV).
Unknown columns are kept as strings. Images without a row get nulls.

Chips of georeferenced scenes (:mod:`rsir.index_builder.chipper`) bring typed values: ``footprint`` (WKB
bytes, WGS84), ``window`` (4 ints), ``scene`` and numeric properties (``eo:cloud_cover``, ``gsd``...),
written as float64 columns (NaN or null: unknown). With footprints the file is GeoParquet 1.1: the
``geo`` file metadata names ``footprint`` as the primary geometry column (WKB, OGC:CRS84, its bbox).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from rsir.index.atomic import atomic_path
from rsir.model.errors import DatasetError

BBOX = ("lon_min", "lat_min", "lon_max", "lat_max")
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        *((name, pa.float64()) for name in BBOX),
        ("time", pa.timestamp("s", tz="UTC")),
        ("sensor", pa.string()),
        ("tags", pa.list_(pa.string())),
    ]
)


def read_metadata(path: Path) -> dict[str, dict[str, Any]]:
    """``{id: row}`` from a ``.csv`` or ``.jsonl`` file, values parsed to the schema's types."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"metadata file {path} does not exist")
    rows: list[dict[str, Any]]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [dict(r) for r in csv.DictReader(fh)]
    elif path.suffix in (".jsonl", ".ndjson"):
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(row)
    else:
        raise DatasetError(f"metadata file {path}: expected .csv or .jsonl")
    out: dict[str, dict[str, Any]] = {}
    for lineno, row in enumerate(rows, 1):
        ident = row.get("id")
        if not ident:
            raise DatasetError(f"{path}: row {lineno} has no id")
        out[str(ident)] = _parse_row(row, f"{path} row {lineno}")
    return out


def _parse_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or value == "":
            continue
        try:
            if key in BBOX:
                parsed[key] = float(value)
            elif key == "tags":
                tags = value if isinstance(value, list) else str(value).split(";")
                parsed[key] = [str(t).strip() for t in tags if str(t).strip()]
            elif key == "time":
                parsed[key] = pa.scalar(str(value)).cast(pa.timestamp("s", tz="UTC")).as_py()
            else:
                parsed[key] = str(value)
        except (ValueError, pa.ArrowInvalid) as exc:
            raise DatasetError(f"{where}: bad {key} value {value!r} ({exc})") from exc
    return parsed


GEOMETRY = "footprint"
GEOPARQUET_VERSION = "1.1.0"


def write_metadata(path: Path, ids: Sequence[str], rows: dict[str, dict[str, Any]]) -> None:
    """One Parquet row per gallery image, in gallery order; extra columns appended by the type of their
    values (see the module's doc), GeoParquet metadata when there are footprints."""
    extra = sorted({k for r in rows.values() for k in r} - set(SCHEMA.names))
    columns = {name: [rows.get(i, {}).get(name) for i in ids] for name in [*SCHEMA.names, *extra]}
    columns["id"] = list(ids)
    schema = SCHEMA
    for name in extra:
        kind = _column_type(name, columns[name])
        if kind == pa.string():
            columns[name] = [None if v is None else str(v) for v in columns[name]]
        schema = schema.append(pa.field(name, kind))
    if GEOMETRY in extra:
        schema = schema.with_metadata({b"geo": json.dumps(geo_metadata(columns[GEOMETRY])).encode()})
    table = pa.table(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _column_type(name: str, values: list[Any]) -> pa.DataType:
    known = [v for v in values if v is not None]
    if name == GEOMETRY:
        return pa.binary()
    if name == "window":
        return pa.list_(pa.int64())
    if known and all(isinstance(v, int | float) and not isinstance(v, bool) for v in known):
        return pa.float64()
    return pa.string()


def geo_metadata(wkb: list[bytes | None]) -> dict[str, Any]:
    """GeoParquet's ``geo`` file metadata for WKB footprints in WGS84 longitude, latitude."""
    shapes = shapely.from_wkb([w for w in wkb if w is not None])
    bounds = [float(v) for v in shapely.total_bounds(shapes)] if len(shapes) else []
    types = sorted({str(t) for t in shapely.get_type_id(shapes)})
    names = {"3": "Polygon", "6": "MultiPolygon", "0": "Point", "1": "LineString", "7": "GeometryCollection"}
    return {
        "version": GEOPARQUET_VERSION,
        "primary_column": GEOMETRY,
        "columns": {
            GEOMETRY: {
                "encoding": "WKB",
                "geometry_types": [names.get(t, "Unknown") for t in types],
                "crs": CRS.from_user_input("OGC:CRS84").to_json_dict(),
                "bbox": bounds,
            }
        },
    }


def base_rows(folder: Path) -> dict[str, dict[str, Any]]:
    """``{id: row}`` of a version's metadata (what ``add`` carries into the next version)."""
    file = Path(folder) / "metadata.parquet"
    if not file.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for row in pq.read_table(file).to_pylist():
        ident = row.pop("id")
        out[str(ident)] = {k: v for k, v in row.items() if v is not None and v != []}
    return out


def read_metadata_table(path: Path) -> pa.Table:
    return pq.read_table(path)
