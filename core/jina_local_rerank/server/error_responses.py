"""Error answers, whoever refuses a request (a middleware, a route, FastAPI's validation): ``{"detail": ...}``,
or TEI's ``{"error", "error_type"}`` on TEI's routes; and their documentation in the OpenAPI description."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from ..errors import RequestRejected
from .schemas import ErrorResponse, TEIError
from .settings import MAX_REPORTED_ERRORS

# The routes that answer errors in TEI's shape.
TEI_ROUTES = ("/rerank", "/info")
# TEI's error_type for each status (its ErrorType enum, lowercased as TEI serializes it).
TEI_ERROR_TYPES = {
    400: "empty",
    413: "validation",
    422: "validation",
    424: "backend",
    429: "overloaded",
    503: "unhealthy",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A Host header this server does not answer for."},
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    404: {"model": ErrorResponse, "description": "The requested model is not served here."},
    413: {
        "model": ErrorResponse,
        "description": "Body, document count, a document or the request's tokens over a limit.",
    },
    422: {"model": ErrorResponse, "description": "Invalid JSON, wrong types, missing fields, an empty query."},
    429: {"model": ErrorResponse, "description": "Too many requests in flight; retry after Retry-After seconds."},
}
TEI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": TEIError, "description": entry["description"]} for status, entry in ERROR_RESPONSES.items()
}
TEI_ERROR_RESPONSES[400] = {"model": TEIError, "description": "Empty 'texts', or a Host header not answered for."}


def validation_errors(errors: Sequence[dict[str, Any]], limit: int = MAX_REPORTED_ERRORS) -> list[dict[str, Any]]:
    """Validation errors as reported: ``type``, ``loc`` and ``msg`` of at most ``limit`` of them (never the input
    they were about), then one entry counting the rest."""
    reported = []
    for error in errors[:limit]:
        message = str(error.get("msg", ""))
        reason = (error.get("ctx") or {}).get("error")
        if error.get("type") == "json_invalid" and isinstance(reason, str):
            message = f"{message}: {reason}"
        reported.append({"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": message[:500]})
    if len(errors) > limit:
        reported.append(
            {"type": "too_many_errors", "loc": ["body"], "msg": f"{len(errors) - limit} more errors not reported"}
        )
    return reported


def describe_errors(errors: Sequence[dict[str, Any]]) -> str:
    """One line for validation errors (TEI's ``error`` field): the first few as ``loc: msg``."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
        parts.append(error["msg"] if error["type"] == "too_many_errors" else f"{where}: {error['msg']}")
    return "; ".join(parts)


def route_path(scope: Scope) -> str:
    """The request's path inside the app (without the ``root_path`` it is mounted at, e.g. a Serve prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def error_response(
    scope: Scope, status: int, detail: str | list[dict], headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error answer to the request of ``scope``: TEI's shape on TEI's routes, else ``{"detail"}``."""
    if route_path(scope) in TEI_ROUTES:
        text = detail if isinstance(detail, str) else describe_errors(detail)
        body: dict[str, Any] = {"error": text, "error_type": TEI_ERROR_TYPES.get(status, "validation")}
    else:
        body = {"detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def rejection_response(scope: Scope, rejected: RequestRejected) -> JSONResponse:
    """The answer to a request refused by a rule of the settings: its status, message and headers."""
    return error_response(scope, rejected.status_code, rejected.detail, rejected.headers)


async def _rejected(request: Request, exc: RequestRejected) -> JSONResponse:
    return rejection_response(request.scope, exc)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(request.scope, 422, validation_errors(exc.errors()))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    return error_response(request.scope, exc.status_code, detail, exc.headers)


# The app's exception handlers (FastAPI's ``exception_handlers``): every refusal in the shapes above.
EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    RequestRejected: _rejected,
    RequestValidationError: _invalid,
    StarletteHTTPException: _http_error,
}
