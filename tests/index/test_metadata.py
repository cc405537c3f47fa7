"""Loading a version's metadata.parquet (as the builder writes it) into filterable columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsir.index.columns import TIME_UNKNOWN, MetadataColumns
from rsir.index.metadata import load_metadata
from rsir.index.versions import IndexFormatError
from rsir.index_builder.metadata import read_metadata, write_metadata
from rsir.search.filters import Filters, filter_mask


def test_builder_metadata_loads_in_gallery_order_with_unknowns(tmp_path: Path) -> None:
    lines = [
        {"id": "b.png", "lon_min": 1, "lat_min": 2, "lon_max": 1.5, "lat_max": 2.5}
        | {"time": "2021-06-01T10:00:00Z", "sensor": "s2", "tags": ["port", "ship"], "place": "Brest"},
        {"id": "a.png", "time": "2020-01-01T00:00:00+00:00", "tags": []},
        {"id": "not-in-gallery.png", "sensor": "wv3"},
    ]
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ids = ["a.png", "b.png", "c.png"]  # c.png has no row at all
    write_metadata(tmp_path / "metadata.parquet", ids, read_metadata(tmp_path / "meta.jsonl"))

    cols = load_metadata(tmp_path, 3)
    assert [cols.row(i) for i in range(3)] == [
        {"bbox": None, "time": "2020-01-01T00:00:00Z", "sensor": None, "tags": []},
        {
            "bbox": [1.0, 2.0, 1.5, 2.5],
            "time": "2021-06-01T10:00:00Z",
            "sensor": "s2",
            "tags": ["port", "ship"],
            "place": "Brest",
        },
        {"bbox": None, "time": None, "sensor": None, "tags": []},
    ]
    assert cols.time.dtype == np.int64 and cols.time[2] == TIME_UNKNOWN
    assert cols.time[1] == 1622541600  # 2021-06-01T10:00:00Z
    assert np.isnan(cols.lon_min[[0, 2]]).all()
    assert list(cols.extra) == ["place"] and cols.extra["place"].tolist() == [None, "Brest", None]
    assert filter_mask(cols, Filters(tags=("ship",), time_from=1622541600)).tolist() == [False, True, False]


def test_absent_file_gives_all_unknown_and_wrong_row_count_is_a_format_error(tmp_path: Path) -> None:
    cols = load_metadata(tmp_path, 4)
    assert len(cols) == 4 and cols.row(3) == MetadataColumns.empty(4).row(3)
    write_metadata(tmp_path / "metadata.parquet", ["a", "b"], {})
    with pytest.raises(IndexFormatError, match="2 rows but the index holds 4"):
        load_metadata(tmp_path, 4)
    (tmp_path / "metadata.parquet").write_bytes(b"not parquet")
    with pytest.raises(IndexFormatError, match="cannot be read"):
        load_metadata(tmp_path, 2)
