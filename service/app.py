"""The FastAPI app factory: a thin HTTP shell over :class:`rsir.search.engine.SearchEngine`.

``create_app(settings)`` loads the model and index at start-up (lifespan), wires cache, batchers and
limits into one :class:`rsir.service.runtime.Runtime`, and watches the index root for new versions.
Tests pass their own ``encoder`` (random weights) instead of loading the shipped one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema

from rsir.model.encoders import ClipEncoder, EncoderConfig, default_checkpoint
from rsir.model.ftf import FTFParams
from rsir.search.engine import EngineConfig
from rsir.service import docs, errors
from rsir.service.metrics import Metrics
from rsir.service.middleware import RequestContext
from rsir.service.routes import images, ops, scenes, search
from rsir.service.runtime import build_runtime
from rsir.service.schemas import ImageSearchRequest
from rsir.service.serving_index import IndexHolder, ServingIndex
from rsir.service.settings import Settings

log = structlog.get_logger(__name__)


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        ftf=FTFParams(tau=settings.tau, lam=settings.lam),
        default_recall_k=settings.default_recall_k,
        # The server's bounds are the engine's: its check (engine.validate, before the batcher) is
        # the only one a request's options meet.
        max_recall_k=settings.max_recall_k,
        max_k=settings.max_k,
        max_explain_k=settings.max_explain_k,
        allow_recall_k_below_k=False,
        query_batch=max(settings.batch_max, 1),
        device=settings.device,
        dtype=settings.dtype,
        nprobe=settings.nprobe,
        hash_ppsr=settings.hash_ppsr,
        allow_exhaustive=False,  # the whole gallery through the block: rsir eval's, not a server's
    )


def load_encoder(settings: Settings) -> ClipEncoder:
    checkpoint = settings.checkpoint or default_checkpoint(settings.model)
    config = EncoderConfig(
        arch=settings.model, checkpoint=checkpoint, device=settings.device, text_dtype=settings.text_dtype
    )
    return ClipEncoder(config)


def _version() -> str:
    """rsir's installed version (what ``/version`` and the OpenAPI description report), read from
    the package metadata: the ``rsir`` package imports this one, so this one does not import it."""
    try:
        return version("rsir")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def create_app(
    settings: Settings, encoder: ClipEncoder | None = None, index: ServingIndex | None = None
) -> FastAPI:
    """The app; ``encoder`` and ``index`` (opened with that encoder) when the caller has them already
    (``rsir serve`` opens both before the server starts, tests pass a tiny encoder), else the
    start-up loads them from the settings."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        enc = encoder if encoder is not None else await asyncio.to_thread(load_encoder, settings)

        def switched(index: ServingIndex) -> None:
            metrics.index_switches.inc()
            metrics.index_info.clear()
            metrics.index_info.labels(index.version).set(index.images)

        holder = await asyncio.to_thread(
            IndexHolder, settings.index, enc, engine_config(settings), switched, index
        )
        metrics.index_info.labels(holder.current.version).set(holder.current.images)
        rt = build_runtime(settings, enc, holder, metrics)
        if settings.index_poll_s > 0:
            rt.tasks.append(asyncio.get_running_loop().create_task(holder.watch(settings.index_poll_s)))
        app.state.runtime = rt
        log.info(
            "ready",
            index=holder.current.version,
            images=holder.current.images,
            cache=rt.cache.kind,
        )
        try:
            yield
        finally:
            await rt.close()

    app = FastAPI(
        title="rsir",
        version=_version(),
        summary="Remote-sensing image-text retrieval: FAISS recall, FTF rerank, explanations.",
        lifespan=lifespan,
        # /docs from local assets (service/docs.py); ReDoc would load from a CDN, so it is not served.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    errors.install(app)
    app.include_router(search.router)
    app.include_router(images.router)
    app.include_router(scenes.router)
    app.include_router(ops.router)
    docs.install(app)
    static = resources.files("service") / "static"
    if static.is_dir():
        # The page is the router's fallback, not a mount at "/": a mount matches every path, so it
        # would turn a wrong method on an API route (GET /search/text) into the page's 404, not a 405.
        app.router.default = StaticFiles(directory=str(static), html=True)
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    _document_hand_parsed_bodies(app)
    return app


def _document_hand_parsed_bodies(app: FastAPI) -> None:
    """Add the schemas of bodies a route parses itself (``POST /search/image`` reads multipart or JSON
    by hand, so FastAPI never sees ``ImageSearchRequest``) to the OpenAPI components its ``$ref``
    names; without them the description holds a dangling reference."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, defs = models_json_schema(
                [(ImageSearchRequest, "validation")], ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model_schema in defs.get("$defs", {}).items():
                components.setdefault(name, model_schema)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
