"""``/docs`` that works offline: Swagger UI's assets are served from the image, not a CDN.

FastAPI's default page loads Swagger UI from cdn.jsdelivr.net, so on a cluster without internet (or
behind a strict egress policy) ``/docs`` is blank. The same page here points at ``/docs/assets/``,
the static files of the ``swagger-ui-py`` wheel (Swagger UI 5, which renders the OpenAPI 3.1 that
FastAPI writes; the older ``swagger-ui-bundle`` wheel ships Swagger UI 4 and cannot). Only the wheel's
folder is used: the package itself (its web-framework adapters) is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def swagger_ui_assets() -> Path:
    """The folder of Swagger UI's files inside the installed ``swagger-ui-py`` wheel."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: /docs needs its assets (pip install rsir)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install(app: FastAPI) -> None:
    """``GET /docs`` and its assets; call on an app created with ``docs_url=None``."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_assets()), name="swagger-ui-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
