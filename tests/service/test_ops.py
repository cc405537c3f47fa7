"""Operations endpoints: liveness, readiness, version, metrics and the OpenAPI description."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rsir.index.versions import resolve_version
from rsir.model.encoders import ClipEncoder
from tests.service.conftest import LiveServer, TinyIndex, assert_error


def test_healthz_readyz_and_version(client: httpx.Client, tiny_index: TinyIndex, tiny_encoder: ClipEncoder):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    current = resolve_version(tiny_index.root).name
    assert body["ready"] is True and body["model"] == tiny_encoder.describe()["arch"]
    assert body["index"]["version"] == current
    assert body["index"]["images"] == body["index"]["live_images"] == len(tiny_index.ids)
    assert body["cache"] == {"kind": "lru", "ok": True}

    version = client.get("/version").json()
    assert version["model"]["arch"] == tiny_encoder.describe()["arch"]
    assert version["model"]["checkpoint_sha256"] == tiny_encoder.describe()["checkpoint_sha256"]
    assert version["index"]["version"] == current
    assert version["index"]["images"] == len(tiny_index.ids)
    assert version["index"]["captions"] == sum(len(c) for c in tiny_index.captions.values())
    assert list(version) == ["rsir", "model", "index"]
    assert list(version["index"]) == ["version", "images", "captions", "created_unix", "token_codec"]


def test_metrics_expose_the_service_families(client: httpx.Client):
    search = client.post("/search/text", json={"query": "metrics families probe", "k": 2})
    assert search.status_code == 200
    client.post("/search/text", json={"query": ""})  # one error, so the errors counter has a sample
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("rsir_stage_seconds", "rsir_batch_size", "rsir_http_requests", "rsir_errors"):
        assert name in families, sorted(families)
    samples = [s for f in families.values() for s in f.samples]
    names = {s.name for s in samples}
    assert {"rsir_http_requests_total", "rsir_errors_total", "rsir_stage_seconds_bucket"} <= names
    stages = {s.labels["stage"] for s in samples if s.name == "rsir_stage_seconds_count"}
    assert {"queue", "encode", "recall", "rerank", "cache"} <= stages
    assert any(
        s.name == "rsir_http_requests_total"
        and s.labels == {"route": "/search/text", "status": "200"}
        and s.value >= 1
        for s in samples
    )
    assert any(
        s.name == "rsir_errors_total" and s.labels == {"code": "invalid_request"} and s.value >= 1
        for s in samples
    )
    assert any(s.name == "rsir_batch_size_count" and s.labels == {"kind": "text"} for s in samples)


def test_openapi_lists_the_routes(server: LiveServer, client: httpx.Client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/search/text",
        "/search/image",
        "/images/{image_id}/thumbnail",
        "/images/{image_id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/version",
    ):
        assert path in paths, sorted(paths)
    assert set(paths["/search/text"]) == {"post"}
    image_body = paths["/search/image"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(image_body)
    json_body = image_body["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "image_base64" in spec["components"]["schemas"][json_body]["properties"]
    # Both searches answer the one response model, which FastAPI checks and describes.
    schemas = spec["components"]["schemas"]
    for path in ("/search/text", "/search/image"):
        ok = paths[path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/SearchResponse"}, ok
    response = schemas["SearchResponse"]
    assert set(response["properties"]) == {
        "results",
        "target",
        "index_version",
        "explain_note",
        "cache",
        "timings_ms",
        "request_id",
    }
    assert set(response["required"]) == {
        "results",
        "target",
        "index_version",
        "cache",
        "timings_ms",
        "request_id",
    }
    version = paths["/version"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert version == {"$ref": "#/components/schemas/VersionResponse"}, version
    assert set(schemas["VersionResponse"]["properties"]) == {"rsir", "model", "index"}
    hits = response["properties"]["results"]["anyOf"]
    assert [h["items"]["$ref"].rsplit("/", 1)[-1] for h in hits] == ["ImageHit", "CaptionHit"]

    # Every reference in the description points at something it holds (a client generator needs it).
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    found = set(refs(spec))
    assert found
    for ref in found:
        assert ref.startswith("#/"), ref
        target: Any = spec
        for part in ref[2:].split("/"):
            assert isinstance(target, dict) and part in target, f"dangling $ref {ref}"
            target = target[part]
    # Served twice, the description is the same (the components are added once, not per request).
    assert client.get("/openapi.json").json() == spec


def test_the_page_is_served_beside_the_api(client: httpx.Client):
    static = resources.files("service") / "static"
    if not (static / "index.html").is_file():
        pytest.skip("this checkout ships no page (service/static/index.html)")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == (static / "index.html").read_bytes()
    for name in ("index.html", "app.js", "app.css"):
        if (static / name).is_file():
            response = client.get(f"/{name}")
            assert response.status_code == 200 and response.content == (static / name).read_bytes()
    # The page does not shadow the API: wrong methods are 405, unknown paths the JSON 404.
    assert_error(client.get("/search/text"), 405, "method_not_allowed")
    assert_error(client.get("/search/image"), 405, "method_not_allowed")
    assert_error(client.post("/healthz"), 405, "method_not_allowed")
    assert_error(client.get("/no-such-file.js"), 404, "not_found")
    assert client.get("/docs").status_code == 200
