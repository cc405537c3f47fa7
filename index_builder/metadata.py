"""Per-image metadata: read from CSV or JSONL, written in gallery order as a Parquet (columnar) file.

Recognised columns (all optional except ``id``): ``id`` (the image id as the archive lists it, e.g.
its relative path), ``lon_min, lat_min, lon_max, lat_max`` (footprint bbox, degrees), ``time``
(acquisition time, ISO 8601), ``sensor``, ``tags`` (a list in JSONL; ``;``-separated in CSV).
Unknown columns are kept as strings. Images without a row get nulls.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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


def write_metadata(path: Path, ids: Sequence[str], rows: dict[str, dict[str, Any]]) -> None:
    """One Parquet row per gallery image, in gallery order; extra columns appended as strings."""
    extra = sorted({k for r in rows.values() for k in r} - set(SCHEMA.names))
    schema = SCHEMA
    for name in extra:
        schema = schema.append(pa.field(name, pa.string()))
    columns = {name: [rows.get(i, {}).get(name) for i in ids] for name in schema.names}
    columns["id"] = list(ids)
    table = pa.table(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_metadata_table(path: Path) -> pa.Table:
    return pq.read_table(path)
