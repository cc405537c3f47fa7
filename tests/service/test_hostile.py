"""A bounded hostile run (issue 21, "done when"): hand-written bad bodies, uploads, ids, filters,
unicode and slow or broken clients against one real server with keys on, and a second without.
Whatever is sent, no answer is a 5xx and no body names a server path or carries a traceback; and
the server is still healthy afterwards. The generated (schemathesis) run is test_fuzz_api.py.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from rsir import service
from tests.conftest import random_images
from tests.service.conftest import LiveServer, ServerFactory, TinyIndex, png_bytes

KEY = {"X-API-Key": "hostile-key"}


def _png_claiming(width: int, height: int) -> bytes:
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _image(fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    random_images(1, seed=9, size=(24, 24))[0].save(buf, format=fmt, **save)
    return buf.getvalue()


def _text_bodies() -> Iterator[bytes | str | object]:
    yield b""
    yield b"\x00\x01\x02"
    yield b"\xff" * 64
    yield b'{"query": "x", "k": NaN}'
    yield b'{"query": "x", "k": Infinity}'
    yield b'{"query": "x", "k": 1e309}'
    yield b'{"query": "x", "k": 100000000000000000000000000000000000000}'
    yield b'{"query": "x", "recall_k": -1e400}'
    yield b'{"query": "x", "filters": {"bbox": [NaN, NaN, NaN, NaN]}}'
    yield b'{"query": "x", "filters": {"bbox": [Infinity, -Infinity, 1e308, -1e308]}}'
    yield b'{"query": "x", "filters": {"bbox": [1, 2, 3]}}'
    yield (
        b'{"query": "x", "filters": {"time_from": "0001-01-01T00:00:00Z", "time_to": "9999-12-31T23:59:59Z"}}'
    )
    yield b'{"query": "x", "filters": {"time_from": "2020-13-45T99:99:99Z"}}'
    yield b'{"query": "x", "filters": {"sensor": ["\\u0000"], "tags": ["\\ud83d\\ude80", "a\\u0301"]}}'
    yield b'{"query": "x", "filters": {"sensor": "S2"}}'
    yield b'{"query": "x", "filters": null, "explain": null}'
    yield b'{"query": "\\u0000\\u0000"}'
    yield b'{"query": "\\udfff"}'
    yield b'{"query": "\\ud800\\ud800", "explain": true, "k": 3}'
    yield b'{"query": "x", "query": "y"}'
    yield b'{"query": "x"}' + b" " * 10_000
    yield b'{"query": "x"} trailing'
    yield b"[" * 50_000
    yield b'{"a":' * 50_000
    yield b'"' + b"\\" * 1001 + b'"'
    yield {"query": "\u202e\u202dmirrored\u2066", "k": 3, "explain": True}
    yield {"query": "e" + "\u0301" * 999, "k": 2}
    yield {"query": "🚀" * 1000, "k": 2, "explain": True}
    yield {"query": "x" * 1001}
    yield {"query": "boats", "k": True}
    yield {"query": "boats", "rerank": None, "recall": "hash", "ppsr": True, "sar": "soft"}
    yield {"query": "boats", "recall": "sgpd", "explain": True, "k": 50}
    yield {"query": "boats", "explain": True, "k": 51}
    yield {"query": "boats", "recall_k": 1000, "k": 200}


def _uploads() -> Iterator[tuple[str, bytes, dict[str, str]]]:
    png = _image("PNG")
    yield "empty.png", b"", {}
    yield "half.png", png[: len(png) // 2], {}
    yield "bomb.png", _png_claiming(60_000, 60_000), {}
    yield "wide.png", _png_claiming(2**31 - 1, 1), {}
    yield "anim.gif", _image("GIF", save_all=True), {}
    yield "q.bmp", _image("BMP"), {}
    yield "q.tiff", _image("TIFF"), {}
    yield "q.webp", _image("WEBP"), {}
    yield "notes.png", b"hello" * 100, {}
    yield "q.png", png, {"k": "1e309"}
    yield "q.png", png, {"k": "-0"}
    yield "q.png", png, {"filters": "[" * 50_000}
    yield "q.png", png, {"filters": '{"bbox": [NaN, 1, 2, 3]}'}
    yield "q.png", png, {"filters": '{"sensor": ["\\ud800"]}'}
    yield "q.png", png, {"target": "captions", "distinct": "maybe"}
    yield "q.png", png, {"target": "captions", "rerank": "ftf", "sar": "hard", "recall": "hash"}
    yield "q.png", png, {"target": "images", "rerank": "ftf"}
    yield "\u202e.png", png, {"\u00e9": "x"}


def _paths(tiny_index: TinyIndex) -> list[Iterator[str] | str]:
    first = tiny_index.ids[0]
    return [
        "/images/%00",
        "/images/" + "a" * 5000,
        "/images/..%2f..%2f..%2fetc%2fpasswd",
        "/images/%2e%2e/%2e%2e/etc/passwd",
        "/images/%ED%A0%80",
        "/images/%ff%fe/thumbnail",
        f"/images/{first}/thumbnail?size=abc",
        f"/images/{first}/thumbnail?size=100000",
        f"/images/{first}/thumbnail?size=-1",
        f"/images/{first}/explain.png",
        f"/images/{first}/explain.png?query=%ED%A0%80",
        f"/images/{first}/explain.png?query=%E2%80%8B",
        f"/images/{first}/explain.png?query=boats&word=-1",
        f"/images/{first}/explain.png?query=boats&word=99999999999999999999",
        f"/images/{first}/explain.png?query=boats&size=1e9",
        f"/images/{first}/explain.png?query=" + "x" * 1500,
        f"/images/{first}?t=../../etc",
        f"/images/{first}?t=" + "9" * 400 + ".a.b",
        f"/images/{first}/thumbnail?t=%00.%00.%00",
        "/version?x=%ff",
        "/readyz/../metrics",
        "/docs/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/app.js/../../pyproject.toml",
    ]


def _raw(server: LiveServer, data: bytes, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        sock.settimeout(10)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and len(out) > 4096:
                    break
        return out


def _raw_requests() -> Iterator[tuple[bytes, bool]]:
    search = (
        b"POST /search/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
    )
    for key in (b"hostile-key ", b"\xff\xfe", b"\x00"):
        yield search + b"Connection: close\r\nX-API-Key: " + key + b'\r\n\r\n{"query": "boat"}', True
    yield b"GET / HTTP/1.1\r\n\r\n", True  # no Host
    yield b"GARBAGE\r\n\r\n", True
    yield b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", True
    yield b"POST /search/text HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", True
    yield b"POST /search/text HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n", True
    yield b"POST /search/text HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True
    yield (
        b"POST /search/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
        False,
    )
    yield b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", True
    yield b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", True


def _forbidden(tiny_index: TinyIndex, tmp_path: Path) -> list[str]:
    code = Path(service.__file__).resolve().parent.parent
    return [str(tiny_index.root), str(tiny_index.archive), str(code), str(tmp_path), "Traceback", 'File "']


def _check(response: httpx.Response, forbidden: list[str], what: object) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    text = response.text if "image" not in response.headers.get("content-type", "") else ""
    for secret in forbidden:
        assert secret not in text, (what, secret, text[:500])


@pytest.mark.slow
@pytest.mark.parametrize("keys", [False, True])
def test_a_hostile_run_finds_no_server_error_and_no_path(
    serve: ServerFactory, tiny_index: TinyIndex, tmp_path: Path, keys: bool
):
    settings: dict[str, object] = {"body_timeout_s": 2.0, "header_timeout_s": 2.0, "max_body_bytes": 1 << 20}
    if keys:
        settings["api_keys"] = {KEY["X-API-Key"]: 0}
    server = serve(**settings)
    client = server.client(timeout=30)
    headers = KEY if keys else {}
    forbidden = _forbidden(tiny_index, tmp_path)
    seen = 0

    for body in _text_bodies():
        if isinstance(body, bytes | str):
            content = body.encode() if isinstance(body, str) else body
            r = client.post(
                "/search/text", content=content, headers={**headers, "content-type": "application/json"}
            )
        else:
            r = client.post("/search/text", json=body, headers=headers)
        _check(r, forbidden, body if not isinstance(body, bytes) else body[:80])
        seen += 1
    for name, data, fields in _uploads():
        r = client.post(
            "/search/image", files={"file": (name, data, "image/png")}, data=fields, headers=headers
        )
        _check(r, forbidden, (name, fields.keys()))
        as_json = {"image_base64": base64.b64encode(data).decode(), **json.loads(json.dumps(fields))}
        r = client.post("/search/image", json=as_json, headers=headers)
        _check(r, forbidden, ("json", name))
        seen += 2
    for path in _paths(tiny_index):
        for extra in ({}, headers):
            r = client.get(str(path), headers=extra)
            _check(r, forbidden, path)
            seen += 1
    for raw, read in _raw_requests():
        answer = _raw(server, raw, read)
        assert not answer.startswith(b"HTTP/1.1 5"), (raw[:80], answer[:300])
        for secret in forbidden:
            assert secret.encode() not in answer, (raw[:80], secret)
        seen += 1
    for key in ("", "x" * 10_000, "a\tb", "%00"):
        r = client.post("/search/text", json={"query": "boats"}, headers={"X-API-Key": key})
        _check(r, forbidden, ("key", key[:20]))
        seen += 1
    # Still healthy, still searching, nothing failed on the server's side.
    assert client.get("/healthz").status_code == 200
    assert client.post("/search/text", json={"query": "boats", "k": 2}, headers=headers).status_code == 200
    metrics = client.get("/metrics", headers=headers).text
    assert 'status="500"' not in metrics
    assert seen > 120
