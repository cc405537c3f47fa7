"""Bad requests: each is a 4xx with the one error body ``{"error": {code, message, request_id}}``,
never a 5xx, whatever part of the request is wrong (JSON, types, bounds, the image, the body size)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.conftest import random_images
from tests.service.conftest import LiveServer, ServerFactory, assert_error, png_bytes


def _text(client: httpx.Client, body: object) -> httpx.Response:
    return client.post("/search/text", json=body)


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header is rewritten to claim ``width x height`` (CRC fixed up)."""
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _upload(client: httpx.Client, data: bytes, name: str = "q.png", **fields: str) -> httpx.Response:
    return client.post("/search/image", files={"file": (name, data, "image/png")}, data=fields)


@pytest.fixture(scope="module")
def small_png() -> bytes:
    return png_bytes(random_images(1, seed=5, size=(32, 32))[0])


def test_invalid_json_is_400(client: httpx.Client):
    for raw in (b'{"query": ', b"{'query': 'single quotes'}", b'{"query": "x",}', b"\xff\xfe"):
        response = client.post("/search/text", content=raw, headers={"content-type": "application/json"})
        assert_error(response, 400, "invalid_json")
    response = client.post(
        "/search/image", content=b'{"image_base64": ', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "boats", "k": "ten"}, "k"),
        ({"query": "boats", "k": 2.5}, "k"),
        ({"query": 42}, "query"),
        ({"query": ["boats"]}, "query"),
        ({"query": "boats", "rerank": "best"}, "rerank"),
        ({"query": "boats", "explain": "maybe"}, "explain"),
        ({"query": "boats", "filters": "sensor=S2"}, "filters"),
        ({"query": "boats", "recal_k": 50}, "recal_k"),  # unknown (misspelt) field
        ({"query": "boats", "target": "captions"}, "target"),  # not a text-search field
        ({"k": 5}, "query"),  # missing
    ],
)
def test_wrong_fields_are_422_naming_the_field(client: httpx.Client, body: dict[str, object], field: str):
    error = assert_error(_text(client, body), 422, "invalid_request")
    assert field in error["message"]


@pytest.mark.parametrize("body", [[], None, "boats", 3])
def test_a_body_that_is_not_an_object_is_422(client: httpx.Client, body: object):
    assert_error(_text(client, body), 422, "invalid_request")


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"query": ""}, "query"),
        ({"query": "   \t\n "}, "query"),
        ({"query": "x" * 10_000}, "1000"),
        ({"query": "boats", "k": 0}, "k"),
        ({"query": "boats", "k": -3}, "k"),
        ({"query": "boats", "k": 201}, "200"),
        ({"query": "boats", "k": 10**30}, "k"),
        ({"query": "boats", "k": 20, "recall_k": 10}, "recall_k"),
        ({"query": "boats", "recall_k": 1001}, "recall_k"),
        ({"query": "boats", "recall_k": 0}, "recall_k"),
        ({"query": "boats", "k": 51, "explain": True}, "50"),  # the settings' max_explain_k
    ],
)
def test_out_of_bounds_values_are_422(client: httpx.Client, body: dict[str, object], word: str):
    error = assert_error(_text(client, body), 422, "invalid_request")
    assert word in error["message"]


def test_a_query_at_the_length_limit_is_served(client: httpx.Client):
    response = _text(client, {"query": "boats " * 166 + "sea!", "k": 2})  # exactly 1000 characters
    assert response.status_code == 200, response.text


def test_bad_uploads(client: httpx.Client, small_png: bytes):
    assert_error(
        _upload(client, b"just some text, not an image\n" * 5, "notes.txt"), 415, "unsupported_image"
    )
    assert_error(_upload(client, small_png[: len(small_png) // 2]), 422, "bad_image")
    assert_error(_upload(client, b""), 422, "bad_image")
    bomb = _png_claiming(30_000, 30_000)
    assert len(bomb) < 100
    assert_error(_upload(client, bomb), 413, "image_too_large")
    as_json = client.post("/search/image", json={"image_base64": base64.b64encode(bomb).decode()})
    assert_error(as_json, 413, "image_too_large")
    # The upload is fine, the options are not.
    for fields, word in ((dict(k="ten"), "k"), (dict(k="0"), "k"), (dict(recal_k="5"), "recal_k")):
        assert word in assert_error(_upload(client, small_png, **fields), 422, "invalid_request")["message"]


def test_bad_request_shapes_on_image_search(client: httpx.Client, small_png: bytes):
    plain = client.post("/search/image", content=b"hello", headers={"content-type": "text/plain"})
    assert "text/plain" in assert_error(plain, 415, "unsupported_media_type")["message"]
    assert_error(client.post("/search/image", content=small_png), 415, "unsupported_media_type")
    missing = client.post("/search/image", data={"k": "3"}, files={"other": ("q.png", small_png)})
    assert "file" in assert_error(missing, 422, "invalid_request")["message"]
    as_field = client.post("/search/image", data={"file": "not a file"}, files={"x": ("a", b"b")})
    assert_error(as_field, 422, "invalid_request")
    bad_b64 = client.post("/search/image", json={"image_base64": "!!not base64!!"})
    assert "image_base64" in assert_error(bad_b64, 422, "invalid_request")["message"]
    assert_error(client.post("/search/image", json={"k": 3}), 422, "invalid_request")  # no image
    assert_error(
        client.post("/search/image", json={"image_base64": base64.b64encode(small_png).decode(), "x": 1}),
        422,
        "invalid_request",
    )


def _part(boundary: bytes, disposition: bytes, data: bytes) -> bytes:
    return b"--" + boundary + b"\r\n" + disposition + b"\r\n\r\n" + data + b"\r\n"


def test_unreadable_multipart_bodies_are_400_naming_the_problem(client: httpx.Client, small_png: bytes):
    file_part = b'Content-Disposition: form-data; name="file"; filename="q.png"'
    cases = {
        # (content type, body) -> words the message must hold
        ("multipart/form-data", b"--x\r\n"): ("Missing boundary",),
        ("multipart/form-data; boundary=zz", b"garbage"): ("Invalid multipart data", "'zz'"),
        ("multipart/form-data; boundary=zz", _part(b"aa", file_part, small_png) + b"--aa--\r\n"): (
            "Invalid multipart data",
            "'zz'",
        ),
        (
            "multipart/form-data; boundary=zz",
            _part(b"zz", b'Content-Disposition: form-data; filename="q.png"', small_png) + b"--zz--\r\n",
        ): ('"name" must be provided',),
    }
    for (content_type, body), words in cases.items():
        response = client.post("/search/image", content=body, headers={"content-type": content_type})
        message = assert_error(response, 400, "invalid_multipart")["message"]
        assert message.startswith("the multipart body cannot be read: "), message
        assert all(w in message for w in words), message
    two_files = client.post(
        "/search/image", files=[("file", ("a.png", small_png)), ("file", ("b.png", small_png))]
    )
    assert "Too many files" in assert_error(two_files, 400, "invalid_multipart")["message"]
    many = client.post(
        "/search/image", files={"file": ("a.png", small_png)}, data={f"f{i}": "1" for i in range(20)}
    )
    assert "Too many fields" in assert_error(many, 400, "invalid_multipart")["message"]
    # A body cut short inside the file part holds no file: the caller's 422, saying so.
    cut = client.post(
        "/search/image",
        content=_part(b"zz", file_part, small_png[:40]),
        headers={"content-type": "multipart/form-data; boundary=zz"},
    )
    assert "none arrived complete" in assert_error(cut, 422, "invalid_request")["message"]


def test_wrong_method_and_unknown_route(client: httpx.Client):
    response = client.get("/search/text")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert_error(client.put("/search/image", content=b"x"), 405, "method_not_allowed")
    assert_error(client.get("/no/such/route"), 404, "not_found")


# -- body and image size limits --------------------------------------------------------------------
LIMIT = 4096


@pytest.fixture
def limited(serve: ServerFactory) -> LiveServer:
    return serve(max_body_bytes=LIMIT, max_image_pixels=10_000)


def _chunks(total: int, prefix: bytes = b"", suffix: bytes = b"") -> Iterator[bytes]:
    yield prefix
    for _ in range(total // 512):
        yield b"a" * 512
    yield suffix


def test_bodies_over_the_limit_are_413(limited: LiveServer, small_png: bytes):
    client = limited.client()
    big_query = {"query": "a" * (LIMIT + 100)}
    assert_error(_text(client, big_query), 413, "body_too_large")  # with Content-Length
    # Chunked (no Content-Length): counted as it streams in.
    streamed = client.post(
        "/search/text",
        content=_chunks(3 * LIMIT, b'{"query": "', b'"}'),
        headers={"content-type": "application/json"},
    )
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "body_too_large")
    big_upload = png_bytes(random_images(1, seed=3, size=(64, 64))[0])
    assert len(big_upload) > LIMIT
    assert_error(_upload(client, big_upload), 413, "body_too_large")
    as_json = client.post("/search/image", json={"image_base64": base64.b64encode(big_upload).decode()})
    assert_error(as_json, 413, "body_too_large")

    boundary = b"rsirboundary"
    head = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="q.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )
    multipart_stream = client.post(
        "/search/image",
        content=_chunks(3 * LIMIT, head, b"\r\n--" + boundary + b"--\r\n"),
        headers={"content-type": "multipart/form-data; boundary=rsirboundary"},
    )
    assert multipart_stream.request.headers["transfer-encoding"] == "chunked"
    assert_error(multipart_stream, 413, "body_too_large")

    # Under the limit everything works as usual, on the same server.
    assert _text(client, {"query": "boats", "k": 2}).status_code == 200
    assert len(small_png) < LIMIT
    assert _upload(client, small_png).status_code == 200
    chunked_ok = client.post(
        "/search/text",
        content=iter([b'{"query": ', b'"chunked but small"}']),
        headers={"content-type": "application/json"},
    )
    assert chunked_ok.status_code == 200, chunked_ok.text


def test_an_image_over_the_pixel_limit_is_413(limited: LiveServer):
    client = limited.client()
    blank = io.BytesIO()
    Image.new("RGB", (200, 200)).save(blank, format="PNG", optimize=True)  # 40,000 px, under 1 KB
    assert len(blank.getvalue()) < LIMIT
    error = assert_error(_upload(client, blank.getvalue()), 413, "image_too_large")
    assert "over the limit of 10000" in error["message"]
    ok = io.BytesIO()
    Image.new("RGB", (90, 90)).save(ok, format="PNG")  # 8,100 px: under the limit
    assert _upload(client, ok.getvalue()).status_code == 200
