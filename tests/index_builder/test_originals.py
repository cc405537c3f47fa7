"""sources.json: every version records where its images' original bytes are, and they read back exactly."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from index_builder.build import BuildConfig, add, build, delete
from model.encoders import ClipEncoder
from search.index_dir import load_index
from search.originals import OriginalUnavailableError, read_original, read_sources
from tests.index_builder.conftest import add_bad_files, write_folder, write_tar_shards

SMALL = BuildConfig(shard_size=4, batch_size=3, workers=0, progress=False)


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


def test_folder_build_records_files_and_add_delete_carry_them_over(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    archive, root = tmp_path / "archive", tmp_path / "idx"
    ids = write_folder(archive, 5)
    add_bad_files(archive)  # skipped files get no entry: they are not in the version
    v1 = build(archive, root, tiny_encoder, SMALL).version
    sources = read_sources(v1)
    assert sorted(sources) == ids
    for ident in ids:
        assert Path(sources[ident][0]).is_absolute() and sources[ident][1:] == (None, None)
        assert read_original(sources[ident]) == (archive / ident).read_bytes()

    more = tmp_path / "more"
    new_ids = write_folder(more, 3, seed=1, prefix="new")
    v2 = add(more, root, tiny_encoder, SMALL).version
    sources = read_sources(v2)
    assert sorted(sources) == sorted(ids + new_ids)
    assert read_original(sources[ids[0]]) == (archive / ids[0]).read_bytes()
    assert read_original(sources[new_ids[-1]]) == (more / new_ids[-1]).read_bytes()

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
    assert sorted(sources) == sorted(members)
    for key, data in members.items():
        path, offset, size = sources[key]
        assert path.endswith(".tar") and offset is not None and size == len(data)
        assert read_original(sources[key]) == data
    # The shard's own .json side file gave tile0000 a sensor: load_index exposes it as a column.
    loaded = load_index(tmp_path / "idx")
    assert loaded.metadata.row(loaded.gallery.ids.index("tile0000"))["sensor"] == "synth"

    # A shard cut short after indexing: a clear error, never silently short bytes.
    last = max(sources.values(), key=lambda s: s[1] or 0)
    Path(last[0]).write_bytes(Path(last[0]).read_bytes()[: (last[1] or 0) + 10])
    with pytest.raises(OriginalUnavailableError, match="cut short"):
        read_original(last)


def test_missing_or_malformed_sources_are_clear_errors(tmp_path: Path) -> None:
    assert read_sources(tmp_path) == {}  # a version built before sources.json existed
    with pytest.raises(OriginalUnavailableError, match="cannot be read"):
        read_original((str(tmp_path / "gone.png"), None, None))
    (tmp_path / "sources.json").write_text('{"a": [1, 2]}')
    with pytest.raises(OriginalUnavailableError, match=r"\[path\] or \[path, offset, size\]"):
        read_sources(tmp_path)
