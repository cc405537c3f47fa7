"""The search routes answer the saved requests as they did when the fixture was written (before the
routes returned checked response models, issue 20): same fields, same ids and captions, same URLs,
same scores and maps, for text and image queries, fresh and cached, signed and not.

Per-request fields (``request_id``, the ``timings_ms`` figures) and the signed URLs' tokens (their
expiry follows the clock) are normalised; numbers are compared to 1e-4 (machines embed the same
images with last-bit differences). ``RSIR_WRITE_FIXTURE=1`` rewrites the fixture after a deliberate
change of the responses.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import ServerFactory, TinyIndex

FIXTURE = Path(__file__).parent / "fixtures" / "search_responses.json"
TOL = 1e-4
_TOKEN = re.compile(r"([?&]t=)[^&]+")


def _requests(tiny_index: TinyIndex) -> list[tuple[str, dict[str, Any]]]:
    """(name, httpx keyword arguments of a POST) of each saved request, in the order they are sent."""
    png = tiny_index.file(tiny_index.ids[7]).read_bytes()
    other = tiny_index.file(tiny_index.ids[22]).read_bytes()
    text = "/search/text"
    return [
        ("text", {"url": text, "json": {"query": "boats in the harbour", "k": 5}}),
        ("text again (cache hit)", {"url": text, "json": {"query": "Boats  in the HARBOUR", "k": 5}}),
        ("text explain", {"url": text, "json": {"query": "forest by the river", "k": 3, "explain": True}}),
        (
            "text explain without maps",
            {"url": text, "json": {"query": "forest", "k": 2, "explain": True, "rerank": "none"}},
        ),
        (
            "text filters",
            {
                "url": text,
                "json": {"query": "houses", "k": 6, "filters": {"sensor": ["S2", "WV3"], "tags": ["water"]}},
            },
        ),
        (
            "text methods",
            {
                "url": text,
                "json": {"query": "planes", "k": 4, "rerank": "local", "ppsr": True, "sar": "soft"},
            },
        ),
        ("text coarse", {"url": text, "json": {"query": "desert", "k": 4, "recall_k": 8, "rerank": "none"}}),
        (
            "image over images",
            {"url": "/search/image", "files": {"file": ("q.png", png, "image/png")}, "data": {"k": "4"}},
        ),
        (
            "image over captions",
            {
                "url": "/search/image",
                "files": {"file": ("q.png", png, "image/png")},
                "data": {"k": "5", "target": "captions", "distinct": "true", "filters": '{"sensor": ["L8"]}'},
            },
        ),
        (
            "image json",
            {
                "url": "/search/image",
                "json": {
                    "image_base64": base64.b64encode(other).decode(),
                    "k": 3,
                    "target": "captions",
                    "rerank": "none",
                },
            },
        ),
    ]


def _normalise(body: Any) -> Any:
    """The parts of a body that do not change from one run to the next."""
    if isinstance(body, dict):
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key == "request_id":
                out[key] = "<id>"
            elif key == "timings_ms":
                out[key] = sorted(value)  # which stages were timed, not how long they took
            else:
                out[key] = _normalise(value)
        return out
    if isinstance(body, list):
        return [_normalise(v) for v in body]
    if isinstance(body, str):
        return _TOKEN.sub(r"\1<token>", body)
    return body


def _answers(clients: dict[str, httpx.Client], tiny_index: TinyIndex) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for name, request in _requests(tiny_index):
        for who, client in clients.items():
            response = client.post(**request)
            assert response.status_code == 200, (name, who, response.text)
            answers[f"{name} [{who}]"] = {
                "content_type": response.headers["content-type"],
                "body": _normalise(response.json()),
            }
    return answers


def _differences(want: Any, got: Any, where: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        if list(want) != list(got):
            return [f"{where}: fields {list(want)} -> {list(got)}"]
        return [d for k in want for d in _differences(want[k], got[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: {len(want)} items -> {len(got)}"]
        pairs = enumerate(zip(want, got, strict=True))
        return [d for i, (a, b) in pairs for d in _differences(a, b, f"{where}[{i}]")]
    if isinstance(want, float) and isinstance(got, float):
        return [] if abs(want - got) <= TOL else [f"{where}: {want} -> {got}"]
    return [] if want == got and type(want) is type(got) else [f"{where}: {want!r} -> {got!r}"]


@pytest.mark.slow
def test_search_responses_match_the_saved_ones(serve: ServerFactory, tiny_index: TinyIndex):
    # A server of its own: the second request must be the first one's cache hit.
    open_client = serve().client()
    keyed = serve(api_keys={"alice": 0}).client(headers={"X-API-Key": "alice"})
    got = _answers({"open": open_client, "key": keyed}, tiny_index)
    if os.environ.get("RSIR_WRITE_FIXTURE") == "1":
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(got, indent=1, sort_keys=False) + "\n")
    want = json.loads(FIXTURE.read_text())
    assert list(got) == list(want)
    broken = [d for name in want for d in _differences(want[name], got[name], name)]
    assert not broken, "\n".join(broken[:30])
