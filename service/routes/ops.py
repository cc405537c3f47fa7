"""Operations endpoints: liveness, readiness, Prometheus metrics, and what is being served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rsir.service.routes.admission import ops_access
from rsir.service.runtime import runtime
from rsir.service.schemas import ServedIndex, VersionResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers. Says nothing of the model, index or cache (see /readyz)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready to search: model and index loaded. A cache that is down is reported, not fatal: the
    service answers uncached."""
    rt = getattr(request.app.state, "runtime", None)
    if rt is None:
        return JSONResponse({"ready": False, "reason": "starting: model and index not loaded yet"}, 503)
    index = rt.holder.current
    body: dict[str, Any] = {
        "ready": True,
        "model": rt.encoder.describe()["arch"],
        "index": {
            "version": index.version,
            "images": index.images,
            "live_images": index.live_images,
            "last_switch_error": rt.holder.last_error,
        },
        "cache": {"kind": rt.cache.kind, "ok": await rt.cache.ping()},
        "inflight": {"now": rt.inflight.count, "limit": rt.inflight.limit},
    }
    return JSONResponse(body)


@router.get("/metrics", response_class=Response, dependencies=[Depends(ops_access)])
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process's metrics."""
    return Response(generate_latest(runtime(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/version", response_model=VersionResponse, dependencies=[Depends(ops_access)])
async def version(request: Request) -> VersionResponse:
    """The model (architecture and checkpoint hash) and the index version being served. Names and
    hashes only: where the checkpoint and the index live on the server is not the caller's business."""
    rt = runtime(request)
    model = {k: v for k, v in rt.encoder.describe().items() if k != "checkpoint"}
    return VersionResponse(
        rsir=request.app.version, model=model, index=ServedIndex(**rt.holder.current.describe())
    )
