"""Archive listing: every layout gives the same sorted items, with captions and metadata attached."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rsir.index_builder.metadata import read_metadata, read_metadata_table, write_metadata
from rsir.index_builder.sources import scan_archive
from rsir.model.errors import DatasetError
from rsir.model.images import decode_image
from tests.index_builder.conftest import write_folder, write_tar_shards


def test_folder_lists_images_recursively_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    ids = write_folder(tmp_path, 7)
    (tmp_path / "README.md").write_text("not an image")
    (tmp_path / "sub" / "UPPER.PNG").write_bytes(b"x")
    items = scan_archive(tmp_path)
    assert [i.id for i in items] == sorted([*ids, "sub/UPPER.PNG"])
    assert all(i.captions == () for i in items)
    assert items[0].read_bytes() == (tmp_path / items[0].id).read_bytes()


def test_tar_shards_group_members_by_key_and_read_captions(tmp_path: Path) -> None:
    expected = write_tar_shards(tmp_path, n=7, per_shard=3)
    items = scan_archive(tmp_path)
    assert [i.id for i in items] == sorted(expected)
    for item in items:
        assert list(item.captions) == expected[item.id]
        decode_image(item.read_bytes())  # the byte range is exactly the PNG member
    assert items[0].meta == {"sensor": "synth"}  # tile0000 has a .json side file
    assert scan_archive(tmp_path / "shard-001.tar")[0].id == "tile0003"


def test_karpathy_json_attaches_captions_and_split(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", 3)
    data = {
        "images": [
            {"filename": "img000.png", "split": "test", "sentences": [{"raw": "a"}, {"raw": "b"}]},
            {"filename": "img001.png", "split": "train", "sentences": [{"raw": "c"}]},
        ]
    }
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    items = scan_archive(tmp_path)
    assert [(i.id, i.captions, i.meta["split"]) for i in items] == [
        ("images/img000.png", ("a", "b"), "test"),
        ("images/img001.png", ("c",), "train"),
    ]
    assert [i.id for i in scan_archive(tmp_path / "dataset.json", split="train")] == ["images/img001.png"]


def test_missing_archive_and_duplicate_ids_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_archive(tmp_path / "nope")
    write_tar_shards(tmp_path / "a", 2, 2)
    (tmp_path / "a" / "shard-001.tar").write_bytes((tmp_path / "a" / "shard-000.tar").read_bytes())
    with pytest.raises(DatasetError, match="share the id"):
        scan_archive(tmp_path / "a")


def test_metadata_csv_and_jsonl_parse_to_the_same_columnar_rows(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "id,lon_min,lat_min,lon_max,lat_max,time,sensor,tags,cloud\n"
        "a.png,10.5,45,10.6,45.1,2024-05-01T10:20:30Z,WV3,port;ships,low\n"
    )
    row = {
        "id": "a.png",
        "lon_min": 10.5,
        "lat_min": 45,
        "lon_max": 10.6,
        "lat_max": 45.1,
        "time": "2024-05-01T10:20:30Z",
        "sensor": "WV3",
        "tags": ["port", "ships"],
        "cloud": "low",
    }
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n\n")
    csv_rows, jsonl_rows = read_metadata(tmp_path / "m.csv"), read_metadata(tmp_path / "m.jsonl")
    assert csv_rows == jsonl_rows
    write_metadata(tmp_path / "m.parquet", ["b.png", "a.png"], csv_rows)
    table = read_metadata_table(tmp_path / "m.parquet").to_pylist()
    assert table[0]["id"] == "b.png" and table[0]["sensor"] is None
    assert table[1]["lon_max"] == 10.6 and table[1]["tags"] == ["port", "ships"]
    assert table[1]["time"] == datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)
    assert table[1]["cloud"] == "low"


def test_bad_metadata_names_file_and_row(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("id,lon_min\na.png,east\n")
    with pytest.raises(DatasetError, match=r"m.csv row 1: bad lon_min"):
        read_metadata(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_text('{"id": "a"}\n[1]\n')
    with pytest.raises(DatasetError, match=r"m.jsonl:2"):
        read_metadata(tmp_path / "m.jsonl")
