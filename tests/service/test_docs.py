"""``/docs`` works without internet: the page names no external host, and every asset it loads (and the
OpenAPI document) is served by the API itself."""

from __future__ import annotations

import re

import httpx

from tests.service.conftest import LiveServer


def test_docs_page_loads_only_local_assets(server: LiveServer, client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "://" not in html and "//cdn" not in html, "an external host in /docs"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    specs = re.findall(r"url: '([^']+)'", html)
    assert specs == ["/openapi.json"]
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for url in [*assets, *specs]:
        assert url.startswith("/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 1000, url
    bundle = client.get(next(a for a in assets if a.endswith("swagger-ui-bundle.js"))).text
    assert "SwaggerUIBundle" in bundle
    # FastAPI writes OpenAPI 3.1, which Swagger UI renders from major version 5 on.
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert re.search(r'version:\s*"5\.\d+\.\d+"|"5\.\d+\.\d+"', bundle), "Swagger UI 5 expected"


def test_redoc_is_not_served_since_it_needs_a_cdn(client: httpx.Client) -> None:
    assert client.get("/redoc").status_code == 404
