"""``GET /images/{id}`` (original bytes), ``/thumbnail``, and ids that are unknown or deleted."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
from PIL import Image

from rsir.index_builder.build import delete
from tests.service.conftest import ServerFactory, TinyIndex, assert_error


def test_original_is_the_exact_source_file(client: httpx.Client, tiny_index: TinyIndex):
    for ident in (tiny_index.ids[0], tiny_index.ids[17], tiny_index.ids[-1]):
        response = client.get(f"/images/{ident}")
        assert response.status_code == 200, response.text
        assert response.content == tiny_index.file(ident).read_bytes()
        assert response.headers["content-type"] == "image/png"
        assert "max-age" in response.headers["cache-control"]
    # The id as search results link it (percent-encoded) reaches the same image.
    encoded = client.get("/images/" + tiny_index.ids[3].replace("/", "%2F"))
    assert encoded.status_code == 200 and encoded.content == tiny_index.file(tiny_index.ids[3]).read_bytes()


def test_thumbnail_is_a_jpeg_within_the_size(serve: ServerFactory, tiny_index: TinyIndex):
    server = serve(thumbnail_px=32)
    client = server.client()
    ident = tiny_index.ids[5]
    with Image.open(tiny_index.file(ident)) as original:
        width, height = original.size
    assert max(width, height) > 32  # so the default size really scales it down
    for query, side in (("", 32), ("?size=16", 16), ("?size=512", 512)):
        response = client.get(f"/images/{ident}/thumbnail{query}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(response.content)) as thumb:
            assert thumb.format == "JPEG"
            assert max(thumb.size) <= side
            assert max(thumb.size) == min(side, max(width, height))  # fit, never enlarged
            # Aspect ratio kept (to a pixel of rounding).
            assert abs(thumb.size[0] / thumb.size[1] - width / height) < 0.1
    assert_error(client.get(f"/images/{ident}/thumbnail?size=8"), 422, "invalid_request")
    assert_error(client.get(f"/images/{ident}/thumbnail?size=big"), 422, "invalid_request")


def test_unknown_ids_are_404_with_the_error_body(client: httpx.Client):
    for path in (
        "/images/no-such.png",
        "/images/images/no-such.png/thumbnail",
        "/images/images/img999.png",
        "/images/../archive/images/img000.png",
    ):
        error = assert_error(client.get(path), 404, "not_found")
        assert "no image" in error["message"] or "Not Found" in error["message"]


def test_a_deleted_id_is_404_once_the_new_version_is_served(
    serve: ServerFactory, tiny_index: TinyIndex, index_copy: Path
):
    server = serve(index=index_copy, index_poll_s=0.1)
    client = server.client()
    gone, kept = tiny_index.ids[7], tiny_index.ids[8]
    assert client.get(f"/images/{gone}").status_code == 200
    assert client.get(f"/images/{gone}/thumbnail").status_code == 200
    before = client.get("/version").json()["index"]["version"]

    new_version = delete(index_copy, [gone]).name
    assert new_version != before
    deadline = time.monotonic() + 10
    while client.get("/version").json()["index"]["version"] != new_version:
        assert time.monotonic() < deadline, "the server did not switch to the new version"
        time.sleep(0.05)

    assert_error(client.get(f"/images/{gone}"), 404, "not_found")
    assert_error(client.get(f"/images/{gone}/thumbnail"), 404, "not_found")
    assert_error(client.get(f"/images/{gone}/explain.png?query=boats"), 404, "not_found")
    assert client.get(f"/images/{kept}").content == tiny_index.file(kept).read_bytes()
    ready = client.get("/readyz").json()
    assert ready["index"]["version"] == new_version
    assert ready["index"]["live_images"] == len(tiny_index.ids) - 1
    hits = client.post("/search/text", json={"query": "boats", "k": 40, "rerank": "none"}).json()["results"]
    assert len(hits) == len(tiny_index.ids) - 1 and gone not in {h["id"] for h in hits}
