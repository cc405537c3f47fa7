"""Every error the API returns has one body shape, ``{"error": {code, message, request_id}}``, and a
4xx status when the caller can fix it. Library errors are mapped here, in one place."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rsir.model.errors import ImageDecodeError, ImageTooLargeError, InvalidInputError, UnsupportedImageError

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class BodyTooLargeError(StarletteHTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parsing re-raises it as is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


class BodyTimeoutError(StarletteHTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408, f"the request body did not arrive within {timeout_s:g} s", headers={"Connection": "close"}
        )


# FastAPI's answer when parsing a JSON body raises anything but a JSONDecodeError (e.g. the
# RecursionError of deeply nested arrays): the body is still not JSON this server can read.
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    metrics = getattr(getattr(request.app.state, "runtime", None), "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers=headers)


def map_library_error(exc: InvalidInputError) -> ApiError:
    if isinstance(exc, ImageTooLargeError):
        return ApiError(413, "image_too_large", str(exc))
    if isinstance(exc, UnsupportedImageError):
        return ApiError(415, "unsupported_image", str(exc))
    if isinstance(exc, ImageDecodeError):
        return ApiError(422, "bad_image", str(exc))
    return ApiError(422, "invalid_request", str(exc))


def _describe(errors: list[Any]) -> tuple[int, str, str]:
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = "; ".join(str(e.get("ctx", {}).get("error", e.get("msg"))) for e in errors)
        return 400, "invalid_json", f"the request body is not valid JSON ({detail})"
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return 422, "invalid_request", "; ".join(parts)


def validation_message(errors: list[Any]) -> tuple[int, str, str]:
    return _describe(errors)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        mapped = map_library_error(exc)
        return error_response(request, mapped.status, mapped.code, mapped.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = _describe(list(exc.errors()))
        return error_response(request, status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
            cause = exc.__cause__
            why = "nested too deeply" if isinstance(cause, RecursionError) else type(cause).__name__
            return error_response(request, 400, "invalid_json", f"the request body is not valid JSON ({why})")
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            408: "request_timeout",
            413: "body_too_large",
            415: "unsupported_media_type",
        }
        code = codes.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error=f"{type(exc).__name__}: {exc}")
        return error_response(request, 500, "internal_error", "internal error; the request id is in the logs")
