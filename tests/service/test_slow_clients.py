"""Slow clients cost a connection, briefly, never a slot of model work (issue 21, item 2): an upload
is read whole (bounded in size and time) before the request is admitted, bodies must arrive within
``body_timeout_s`` (then 408) and headers within ``header_timeout_s`` (then the connection closes).
The slow clients are real sockets dribbling bytes into the real server."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests.service.conftest import LiveServer, ServerFactory

BODY_TIMEOUT_S = 3.0
HEADER_TIMEOUT_S = 2.0


_PART = (
    b'--zz\r\nContent-Disposition: form-data; name="file"; filename="q.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)


def _dribble(
    server: LiveServer, path: str, content_type: str, total: int, out: list[bytes], prefix: bytes = b""
) -> None:
    """Send headers and ``prefix``, then 10 bytes every 0.2 s (of ``total`` promised); keep what the
    server answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {total}\r\n\r\n"
        )
        sock.sendall(head.encode() + prefix)
        sock.settimeout(0.2)
        answer = b""
        for _ in range(total // 10):
            try:
                sock.sendall(b"x" * 10)
            except OSError:
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        out.append(answer)


@pytest.fixture
def guarded(serve: ServerFactory) -> LiveServer:
    return serve(max_inflight=2, body_timeout_s=BODY_TIMEOUT_S, header_timeout_s=HEADER_TIMEOUT_S)


def test_slow_uploads_do_not_starve_searches_and_end_in_408(guarded: LiveServer):
    answers: list[bytes] = []
    slow = [
        threading.Thread(
            target=_dribble,
            args=(guarded, "/search/image", "multipart/form-data; boundary=zz", 2000, answers, _PART),
        )
        for _ in range(4)
    ]
    started = time.monotonic()
    for t in slow:
        t.start()
    time.sleep(0.5)
    client = guarded.client()
    statuses = [
        client.post("/search/text", json={"query": f"while dribbling {n}", "k": 2}).status_code
        for n in range(6)
    ]
    assert statuses == [200] * 6  # 4 uploads in progress hold none of the 2 slots
    for t in slow:
        t.join(timeout=30)
    elapsed = time.monotonic() - started
    assert len(answers) == 4
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer
    assert elapsed < BODY_TIMEOUT_S + 5


def test_a_slow_json_body_is_408(guarded: LiveServer):
    answers: list[bytes] = []
    _dribble(guarded, "/search/text", "application/json", 2000, answers)
    assert answers[0].startswith(b"HTTP/1.1 408"), answers[0][:200]


@pytest.mark.slow
def test_headers_that_never_finish_close_the_connection(guarded: LiveServer):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=HEADER_TIMEOUT_S + 5) as sock:
        t0 = time.monotonic()
        sock.sendall(b"POST /search/text HTTP/1.1\r\nHost: test\r\n")
        for _ in range(20):  # one more header byte a second: still never a whole request
            try:
                sock.sendall(b"X")
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                if sock.recv(1024) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        closed_after = time.monotonic() - t0
    assert closed_after < HEADER_TIMEOUT_S + 2.5, f"connection still open after {closed_after:.1f} s"
    # A keep-alive client that answers promptly is unaffected by the timer it re-arms.
    with httpx.Client(base_url=guarded.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT_S / 2)
