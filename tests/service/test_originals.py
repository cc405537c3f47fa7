"""Originals over HTTP: served from wherever the archive is mounted (``RSIR_ARCHIVE_ROOT``), refused as a
server-side error once they changed since indexing (counted in /metrics, never blamed on the request,
never served as if unchanged), and thumbnailed whenever the builder accepted them."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from rsir.index_builder.build import build
from rsir.index_builder.config import BuildConfig
from rsir.model.encoders import ClipEncoder
from tests.service.conftest import ServerFactory, TinyIndex, assert_error, metric

CONFIG = BuildConfig(shard_size=16, batch_size=8, workers=0, progress=False)
BIG = "images/big.png"  # 7000 x 7000: over the service's 40 MP upload limit, under the builder's 64 MP


@pytest.fixture
def own_index(tmp_path: Path, tiny_index: TinyIndex, tiny_encoder: ClipEncoder) -> tuple[Path, Path]:
    """``(archive, index root)``: a private copy of the tiny archive, indexed, free to change."""
    archive = Path(shutil.copytree(tiny_index.archive, tmp_path / "archive"))
    root = tmp_path / "index"
    build(archive, root, tiny_encoder, CONFIG)
    return archive, root


def _version(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def test_a_moved_archive_is_served_from_the_archive_root_setting(
    serve: ServerFactory, own_index: tuple[Path, Path], tiny_index: TinyIndex, tmp_path: Path
) -> None:
    archive, root = own_index
    ident = tiny_index.ids[3]
    mounted = Path(shutil.move(archive, tmp_path / "mnt" / "archive"))
    client = serve(index=root, archive_root=mounted).client()
    response = client.get(f"/images/{ident}")
    assert response.status_code == 200
    assert response.content == (mounted / ident).read_bytes()

    # Without the setting the recorded root is gone: the server's fault, no path in the answer.
    lost = serve(index=root).client()
    for path in (f"/images/{ident}", f"/images/{ident}/thumbnail"):
        response = lost.get(path)
        assert_error(response, 500, "original_unavailable")
        assert str(tmp_path) not in response.text


def test_a_changed_original_is_a_counted_server_error_never_served(
    serve: ServerFactory, own_index: tuple[Path, Path], tiny_index: TinyIndex
) -> None:
    archive, root = own_index
    same_size, longer = tiny_index.ids[5], tiny_index.ids[6]
    data = bytearray((archive / same_size).read_bytes())
    data[-20] ^= 0xFF  # inside the PNG's last chunk: the file still decodes, its bytes differ
    (archive / same_size).write_bytes(bytes(data))
    (archive / longer).write_bytes((archive / longer).read_bytes() + b"appended")
    client = serve(index=root).client()
    before = metric(client, "rsir_errors_total", code="original_changed")
    for ident in (same_size, longer):
        for path in (f"/images/{ident}", f"/images/{ident}/thumbnail", f"/images/{ident}/explain.png"):
            response = client.get(path, params={"query": "boats"} if "explain" in path else None)
            error = assert_error(response, 500, "original_changed")
            assert ident in error["message"] and str(archive) not in response.text
            assert "cache-control" not in response.headers
    assert metric(client, "rsir_errors_total", code="original_changed") == before + 6
    untouched = tiny_index.ids[7]
    assert client.get(f"/images/{untouched}").content == (archive / untouched).read_bytes()


def test_a_version_with_absolute_format_1_sources_still_serves_and_a_corrupt_file_is_not_the_clients(
    serve: ServerFactory, own_index: tuple[Path, Path], tiny_index: TinyIndex
) -> None:
    """Versions built before sources.json format 2 record absolute paths and no hash."""
    archive, root = own_index
    old = {ident: [str((archive / ident).resolve())] for ident in tiny_index.ids}
    (_version(root) / "sources.json").write_text(json.dumps(old))
    client = serve(index=root, archive_root=archive.parent / "not-used-for-absolute-paths").client()
    ident, corrupt = tiny_index.ids[1], tiny_index.ids[2]
    assert client.get(f"/images/{ident}").content == (archive / ident).read_bytes()
    assert client.get(f"/images/{ident}/thumbnail").status_code == 200

    size = (archive / corrupt).stat().st_size
    (archive / corrupt).write_bytes(b"\0" * size)  # no hash to catch it: decoding does
    before = metric(client, "rsir_errors_total", code="original_unavailable")
    error = assert_error(client.get(f"/images/{corrupt}/thumbnail"), 500, "original_unavailable")
    assert "upload" not in error["message"]
    assert metric(client, "rsir_errors_total", code="original_unavailable") == before + 1


def test_every_image_the_builder_accepted_gets_a_thumbnail_and_an_overlay(
    serve: ServerFactory, tiny_index: TinyIndex, tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    archive = Path(shutil.copytree(tiny_index.archive, tmp_path / "archive"))
    Image.new("RGB", (7000, 7000), (40, 90, 160)).save(archive / BIG)
    dataset = json.loads((archive / "dataset.json").read_text())
    dataset["images"].append({"filename": "big.png", "split": "train", "sentences": [{"raw": "sea"}]})
    (archive / "dataset.json").write_text(json.dumps(dataset))
    report = build(archive, tmp_path / "index", tiny_encoder, CONFIG)
    assert report.skipped == [] and report.n_images == len(tiny_index.ids) + 1

    client = serve(index=tmp_path / "index").client()
    assert client.get("/version").status_code == 200
    thumb = client.get(f"/images/{BIG}/thumbnail", params={"size": 64})
    assert thumb.status_code == 200, thumb.text
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)
    overlay = client.get(f"/images/{BIG}/explain.png", params={"query": "sea", "size": 64})
    assert overlay.status_code == 200, overlay.text
    assert Image.open(io.BytesIO(overlay.content)).size[0] == 64
