"""sources.json: every version records where its images' original bytes are (relative to the archive
root), their size and hash, and they read back exactly, from wherever the archive is mounted."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from rsir.index.originals import (
    Original,
    OriginalChangedError,
    OriginalUnavailableError,
    Sources,
    read_original,
    read_sources,
)
from rsir.index.versions import load_index
from rsir.index_builder.build import add, build, delete
from rsir.index_builder.config import BuildConfig
from rsir.model.encoders import ClipEncoder
from tests.index_builder.conftest import add_bad_files, write_folder, write_tar_shards

SMALL = BuildConfig(shard_size=4, batch_size=3, workers=0, progress=False)


def _read(sources: Sources, ident: str, archive_root: Path | None = None) -> bytes:
    entry = sources.items[ident]
    return read_original(sources.locate(entry, archive_root), entry)


def _sha256_128(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _tar_members(folder: Path) -> dict[str, bytes]:
    """``{key: image bytes}`` of every shard, read with tarfile (independent of the builder's spans)."""
    out = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                if info.name.endswith(".png"):
                    fh = tar.extractfile(info)
                    assert fh is not None
                    out[info.name.removesuffix(".png")] = fh.read()
    return out


def test_folder_build_records_relative_paths_sizes_and_hashes(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    archive, root = tmp_path / "archive", tmp_path / "idx"
    ids = write_folder(archive, 5)
    add_bad_files(archive)  # skipped files get no entry: they are not in the version
    v1 = build(archive, root, tiny_encoder, SMALL).version
    sources = read_sources(v1)
    assert sources.root == str(archive.resolve())
    assert sorted(sources.items) == ids
    for ident in ids:
        data = (archive / ident).read_bytes()
        assert sources.items[ident] == Original(ident, None, len(data), _sha256_128(data))
        assert _read(sources, ident) == data
    doc = json.loads((v1 / "sources.json").read_text())
    assert doc["format"] == 2 and doc["hash"] == "sha256-128"
    assert not any(Path(e[0]).is_absolute() for e in doc["items"].values()), "sources are relative"


def test_a_moved_archive_reads_back_under_the_archive_root_setting(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    archive = tmp_path / "archive"
    ids = write_folder(archive, 4)
    sources = read_sources(build(archive, tmp_path / "idx", tiny_encoder, SMALL).version)
    moved = Path(shutil.move(archive, tmp_path / "mounted-elsewhere"))
    with pytest.raises(OriginalUnavailableError, match="cannot be read"):
        _read(sources, ids[0])  # the recorded root is gone
    assert _read(sources, ids[0], moved) == (moved / ids[0]).read_bytes()


def test_add_from_a_sibling_folder_widens_the_root_and_delete_carries_it_over(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    archive, more, root = tmp_path / "data" / "archive", tmp_path / "data" / "more", tmp_path / "idx"
    ids = write_folder(archive, 5)
    build(archive, root, tiny_encoder, SMALL)
    new_ids = write_folder(more, 3, seed=1, prefix="new")
    v2 = add(more, root, tiny_encoder, SMALL).version
    sources = read_sources(v2)
    assert sources.root == str((tmp_path / "data").resolve())
    assert sorted(sources.items) == sorted(ids + new_ids)
    assert sources.items[ids[0]].path == f"archive/{ids[0]}"
    assert sources.items[new_ids[-1]].path == f"more/{new_ids[-1]}"
    assert _read(sources, ids[0]) == (archive / ids[0]).read_bytes()
    assert _read(sources, new_ids[-1]) == (more / new_ids[-1]).read_bytes()

    v3 = delete(root, [ids[1]])
    assert read_sources(v3) == sources  # hard-linked: ids stay in the version, under a tombstone
    assert load_index(root).metadata.row(0)["bbox"] is None  # built without metadata: all unknown


def test_tar_build_records_member_spans_that_read_back_exactly(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    write_tar_shards(tmp_path / "tars", n=6, per_shard=4)
    members = _tar_members(tmp_path / "tars")
    version = build(tmp_path / "tars", tmp_path / "idx", tiny_encoder, SMALL).version
    sources = read_sources(version)
    assert sorted(sources.items) == sorted(members)
    for key, data in members.items():
        entry = sources.items[key]
        assert entry.path.endswith(".tar") and not Path(entry.path).is_absolute()
        assert entry.offset is not None and entry.size == len(data) and entry.digest == _sha256_128(data)
        assert _read(sources, key) == data
    # The shard's own .json side file gave tile0000 a sensor: load_index exposes it as a column.
    loaded = load_index(tmp_path / "idx")
    assert loaded.metadata.row(loaded.gallery.ids.index("tile0000"))["sensor"] == "synth"

    # A shard cut short after indexing: a clear error, never silently short bytes.
    last = max(sources.items, key=lambda k: sources.items[k].offset or 0)
    shard = sources.locate(sources.items[last])
    shard.write_bytes(shard.read_bytes()[: (sources.items[last].offset or 0) + 10])
    with pytest.raises(OriginalChangedError, match="10 bytes"):
        _read(sources, last)


def test_a_changed_original_of_the_same_size_is_refused(tmp_path: Path, tiny_encoder: ClipEncoder) -> None:
    archive = tmp_path / "archive"
    ids = write_folder(archive, 3)
    sources = read_sources(build(archive, tmp_path / "idx", tiny_encoder, SMALL).version)
    path = archive / ids[0]
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(OriginalChangedError, match="differ"):
        _read(sources, ids[0])
    path.write_bytes(bytes(data) + b"x")
    with pytest.raises(OriginalChangedError, match="bytes"):
        _read(sources, ids[0])


def test_format_1_sources_with_absolute_paths_still_read(tmp_path: Path) -> None:
    """Versions built before format 2: ``[path]`` / ``[path, offset, size]``, absolute, no hash."""
    image = tmp_path / "a.png"
    image.write_bytes(b"0123456789")
    (tmp_path / "sources.json").write_text(json.dumps({"a": [str(image)], "b": [str(image), 2, 3]}))
    sources = read_sources(tmp_path)
    assert sources.root is None
    assert _read(sources, "a", archive_root=tmp_path / "ignored") == b"0123456789"
    assert _read(sources, "b") == b"234"


def test_missing_or_malformed_sources_are_clear_errors(tmp_path: Path) -> None:
    assert read_sources(tmp_path) == Sources(None, {})  # a version built before sources.json existed
    with pytest.raises(OriginalUnavailableError, match="cannot be read"):
        read_original(tmp_path / "gone.png", Original("gone.png"))
    (tmp_path / "sources.json").write_text('{"a": [1, 2]}')
    with pytest.raises(OriginalUnavailableError, match=r"\[path\] or \[path, offset, size\]"):
        read_sources(tmp_path)
    doc = {"format": 2, "root": str(tmp_path), "hash": "sha256-128", "items": {"a": ["../x", None, 1, "h"]}}
    (tmp_path / "sources.json").write_text(json.dumps(doc))
    sources = read_sources(tmp_path)
    with pytest.raises(OriginalUnavailableError, match="leaves the archive root"):
        sources.locate(sources.items["a"])
    (tmp_path / "sources.json").write_text(json.dumps({**doc, "format": 3}))
    with pytest.raises(OriginalUnavailableError, match="this rsir reads format 2"):
        read_sources(tmp_path)
