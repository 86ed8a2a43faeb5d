"""``create_app``: the FastAPI application serving the Jina, Cohere v2 and TEI rerank APIs from a local model."""

from __future__ import annotations

import asyncio
import email.message
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import RequestRejected
from ..reranker import Reranker, ScoreResult
from .batcher import DirectScorer, MicroBatcher, Scorer
from .metrics import ServerMetrics
from .schemas import (
    BatchingStats,
    CohereRerankRequest,
    CohereRerankResponse,
    ErrorResponse,
    Health,
    JinaRerankRequest,
    JinaRerankResponse,
    ModelCard,
    ModelList,
    Ready,
    TEIError,
    TEIInfo,
    TEIRerankRequest,
    TEIRerankResult,
    cohere_v2_response,
    jina_response,
    tei_response,
)
from .settings import TEI_ERROR_TYPES, ServerSettings, describe_errors, validation_errors

access_logger = logging.getLogger("jina_local_rerank.access")
error_logger = logging.getLogger("jina_local_rerank.server")

TEI_ROUTES = ("/rerank", "/info")
# Routes that answer whatever the Host: probes and scrapers address a server by its IP; they hold no API.
PROBE_ROUTES = ("/health", "/ready", "/metrics")
# Requests of at most this many characters are tokenized on the event loop (well under a millisecond); longer
# ones in a worker thread, so a large request never stalls the loop.
INLINE_TOKENIZE_CHARS = 16_384
REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_SCOPE_KEY = "jina_local_rerank.request_id"
# A client's own request id is kept when it is this safe to log and echo; otherwise a new one is made.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_ERRORS: dict[int | str, dict[str, Any]] = {
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
_TEI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": TEIError, "description": entry["description"]} for status, entry in _ERRORS.items()
}
_TEI_ERRORS[400] = {"model": TEIError, "description": "Empty 'texts', or a Host header not answered for."}


def error_response(
    path: str, status: int, detail: str | list[dict], headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error answer for ``path``: TEI's ``{"error", "error_type"}`` on TEI's routes, else ``{"detail"}``."""
    if path in TEI_ROUTES:
        text = detail if isinstance(detail, str) else describe_errors(detail)
        body: dict[str, Any] = {"error": text, "error_type": TEI_ERROR_TYPES.get(status, "validation")}
    else:
        body = {"detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def route_path(scope: Scope) -> str:
    """The request's path inside the app (without the ``root_path`` it is mounted at, e.g. a Serve prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def request_id(request: Request) -> str:
    """The id of ``request`` (also its ``X-Request-ID`` response header and access-log field)."""
    return request.scope.get(REQUEST_ID_SCOPE_KEY, "")


class FrontDoor:
    """Outermost middleware: request ids, the Host check, the access log, metrics, and no 500 that closes a
    connection.

    Every response carries ``X-Request-ID`` (the client's own if it sent a safe one). A request whose ``Host``
    the settings do not answer for gets 400 before anything else runs (the probe routes excepted). An exception
    that escapes the app is logged with its traceback and answered with a JSON 500 (when nothing was sent yet),
    so the keep-alive connection stays usable for the client's next request.
    """

    def __init__(self, app: ASGIApp, settings: ServerSettings, metrics: ServerMetrics, routes: Sequence[str]) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        given = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = given if CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope[REQUEST_ID_SCOPE_KEY] = rid
        path = route_path(scope)
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), rid.encode())]
            await send(message)

        try:
            try:
                if path not in PROBE_ROUTES:
                    self.settings.check_host(headers.get(b"host", b"").decode("latin-1"))
            except RequestRejected as exc:
                await error_response(path, exc.status_code, exc.detail)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            error_logger.exception("request %s (%s %s) failed", rid, scope["method"], path)
            if not started_response:
                await error_response(path, 500, "internal error")(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = path if path in self.routes else "other"
            self.metrics.observe(route, status, seconds)
            client = "%s:%d" % tuple(scope["client"]) if scope.get("client") else "-"
            access_logger.info(
                '%s - "%s %s" %d %.1fms request_id=%s', client, scope["method"], path, status, 1000 * seconds, rid
            )


class ApiKeyGate:
    """ASGI middleware answering 401 to a request for one of ``paths`` without the settings' API key, before its
    body is read, parsed or checked: a caller without the key learns nothing else about the server."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, paths: Sequence[str]) -> None:
        self.app = app
        self.settings = settings
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.keyed and route_path(scope) in self.paths:
            header = dict(scope["headers"]).get(b"authorization")
            try:
                self.settings.check_authorization(None if header is None else header.decode("latin-1"))
            except RequestRejected as exc:
                await error_response(route_path(scope), exc.status_code, exc.detail, exc.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestBodyLimit:
    """ASGI middleware answering 413 to a request whose body is over ``max_bytes``, before the app reads it.

    A declared ``Content-Length`` over the limit is refused without reading; a chunked body is counted as it
    arrives and refused as soon as it passes the limit, so memory stays bounded either way.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away (or was timed out) before sending its whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is over the limit of {self.max_bytes} bytes"
        await error_response(route_path(scope), 413, detail)(scope, receive, send)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number in the body is out of the range of a double")
    return value


def parse_json_strictly(body: bytes) -> Any:
    """The JSON value of ``body``, refusing what Python's parser allows beyond JSON (NaN, Infinity, numbers out of
    range); 422 for anything that is not valid JSON, without repeating it."""
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise RequestRejected(422, f"the body is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except UnicodeDecodeError:
        raise RequestRejected(422, "the body is not valid JSON: it is not UTF-8 text") from None
    except RecursionError:
        raise RequestRejected(422, "the body is not valid JSON we accept: it is nested too deeply") from None
    except ValueError as exc:  # our refusals above, and integers of more digits than Python converts
        raise RequestRejected(422, f"the body is not valid JSON we accept: {exc}") from None


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of ``content_type`` as JSON (absent, ``application/json``, ``+json``)."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class _ParsedBodyRequest(Request):
    """A request whose JSON body was already parsed (strictly) by :class:`CheckedBodyRoute`."""

    parsed: Any

    async def json(self) -> Any:
        return self.parsed


class CheckedBodyRoute(APIRoute):
    """A route that parses its JSON body strictly and runs the settings' body checks before validating it.

    ``app.state.body_checks`` maps the route's path to the field holding its documents and that field's limit.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        path = self.path

        async def checked(request: Request) -> Response:
            checks = request.app.state.body_checks.get(path)
            body = await request.body() if checks else b""
            if body and _is_json(request.headers.get("content-type")):
                parsed = parse_json_strictly(body)
                settings: ServerSettings = request.app.state.settings
                field_name, limit = checks
                settings.check_body(parsed, field_name, limit)
                request = _ParsedBodyRequest(request.scope, request.receive)
                request._body = body
                request.parsed = parsed
            return await handler(request)

        return checked


def create_app(reranker: Reranker, settings: ServerSettings, scorer: Scorer | None = None) -> FastAPI:
    """A FastAPI app scoring with ``reranker`` under ``settings``.

    Routes: ``POST /v1/rerank`` (Jina, and Cohere v1 clients), ``POST /v2/rerank`` (Cohere v2), ``POST /rerank``
    and ``GET /info`` (TEI), ``GET /v1/models``, ``GET /health`` (liveness), ``GET /ready`` (readiness),
    ``GET /metrics`` (Prometheus), ``GET /docs`` and ``/openapi.json``. Errors are JSON: ``{"detail": ...}``, or
    TEI's ``{"error", "error_type"}`` on TEI's routes. Each request is tokenized once; its token budget and (for
    TEI) truncation are checked on that encoding before any scoring. Scoring runs in worker threads through a
    :class:`MicroBatcher` (or a :class:`DirectScorer` when ``settings.batching`` is off), started and stopped
    with the app's lifespan; ``scorer``, if given, replaces them (the Ray Serve deployment passes its
    ``@serve.batch`` scorer).
    """
    if scorer is None:
        if settings.batching:
            scorer = MicroBatcher(
                reranker,
                max_wait_ms=settings.batch_wait_ms,
                max_concurrent_batches=settings.batch_concurrency,
                slice_tokens=settings.batch_slice_tokens,
            )
        else:
            scorer = DirectScorer(reranker)
    counters = scorer.counters
    metrics = ServerMetrics()
    serving = {"ready": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await scorer.start()
        serving["ready"] = True
        try:
            yield
        finally:
            serving["ready"] = False
            await scorer.stop()

    app = FastAPI(
        title="jina-local-rerank",
        version=__version__,
        description="A self-hosted, drop-in rerank API running a local JinaBERT cross-encoder: Jina's "
        "/v1/rerank (which Cohere v1 clients speak too), Cohere's /v2/rerank and TEI's /rerank. Send "
        "'Authorization: Bearer <key>' when the server was started with an API key.",
        lifespan=lifespan,
    )
    app.state.scorer = scorer
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.body_checks = {
        "/v1/rerank": ("documents", settings.max_documents),
        "/v2/rerank": ("documents", settings.max_documents),
        "/rerank": ("texts", settings.max_client_batch_size),
    }
    app.router.route_class = CheckedBodyRoute
    bearer = HTTPBearer(auto_error=False, description="The server's API key, if it was started with one.")

    async def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        settings.check_api_key(None if credentials is None else credentials.credentials)

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> JSONResponse:
        return error_response(route_path(request.scope), exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(route_path(request.scope), 422, validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(route_path(request.scope), exc.status_code, detail, exc.headers)

    async def score(
        query: str,
        documents: list[str],
        field_name: str = "documents",
        *,
        max_documents: int | None = None,
        truncation: bool = True,
        truncation_side: str = "right",
        max_document_length: int | None = None,
    ) -> ScoreResult:
        """Check, tokenize once, check the encoding, then score: every route's path to the model."""
        settings.check_request(query, documents, field_name, max_documents)
        settings.check_capacity(counters.in_flight)
        counters.in_flight += 1
        try:
            encode = functools.partial(
                reranker.encode,
                query,
                documents,
                truncation_side=truncation_side,
                max_document_length=max_document_length,
            )
            if len(query) + sum(map(len, documents)) <= INLINE_TOKENIZE_CHARS:
                encoded = encode()
            else:
                encoded = await asyncio.to_thread(encode)
            settings.check_encoding(encoded, reranker.max_length, field_name, truncation)
            return await scorer.score(encoded)
        finally:
            counters.in_flight -= 1

    @app.post(
        "/v1/rerank",
        response_model=JinaRerankResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(authorize)],
        responses=_ERRORS,
        tags=["rerank"],
        summary="Rank documents for a query (Jina Reranker API; Cohere v1 clients too)",
    )
    async def jina_rerank(body: JinaRerankRequest) -> JinaRerankResponse:
        model = settings.resolve_model(body.model)
        result = await score(body.query, body.document_texts())
        return jina_response(body, result, model)

    @app.post(
        "/v2/rerank",
        response_model=CohereRerankResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(authorize)],
        responses=_ERRORS,
        tags=["rerank"],
        summary="Rank documents for a query (Cohere v2 API)",
    )
    async def cohere_rerank(body: CohereRerankRequest, request: Request) -> CohereRerankResponse:
        settings.resolve_model(body.model)
        result = await score(body.query, body.document_texts(), max_document_length=body.max_tokens_per_doc)
        return cohere_v2_response(body, result, request_id(request))

    @app.post(
        "/rerank",
        response_model=list[TEIRerankResult],
        response_model_exclude_none=True,
        dependencies=[Depends(authorize)],
        responses=_TEI_ERRORS,
        tags=["rerank"],
        summary="Rank texts for a query (Text Embeddings Inference API)",
    )
    async def tei_rerank(body: TEIRerankRequest) -> list[TEIRerankResult]:
        if not body.texts:
            raise RequestRejected(400, "`texts` cannot be empty")
        result = await score(
            body.query,
            body.texts,
            "texts",
            max_documents=settings.max_client_batch_size,
            truncation=settings.auto_truncate if body.truncate is None else body.truncate,
            truncation_side=body.truncation_direction.lower(),
        )
        return tei_response(body, result)

    @app.get("/info", response_model=TEIInfo, dependencies=[Depends(authorize)], responses=_TEI_ERRORS, tags=["info"])
    async def info() -> TEIInfo:
        """The served model and limits, with TEI's fields."""
        return TEIInfo(
            model_id=settings.served_model_names[0],
            model_dtype=str(reranker.dtype).removeprefix("torch."),
            max_concurrent_requests=settings.max_queued_requests,
            max_input_length=reranker.max_length,
            max_batch_tokens=reranker.max_batch_tokens,
            max_client_batch_size=settings.max_client_batch_size,
            auto_truncate=settings.auto_truncate,
            version=__version__,
        )

    @app.get(
        "/v1/models", response_model=ModelList, dependencies=[Depends(authorize)], responses=_ERRORS, tags=["info"]
    )
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name) for name in settings.served_model_names])

    @app.get("/health", response_model=Health, tags=["info"])
    async def health() -> Health:
        """Liveness: answers while the process runs, with the model and the batching counters."""
        return Health(
            model=settings.served_model_names[0],
            device=str(reranker.device),
            dtype=str(reranker.dtype).removeprefix("torch."),
            max_length=reranker.max_length,
            batching=BatchingStats(
                enabled=scorer.batching,
                requests=counters.requests,
                batches=counters.batches,
                pairs=counters.pairs,
                tokens=counters.tokens,
                in_flight=counters.in_flight,
            ),
        )

    @app.get("/ready", response_model=Ready, responses={503: {"model": Ready}}, tags=["info"])
    async def ready() -> JSONResponse:
        """Readiness: 200 while the server takes requests; 503 while starting, stopping or with a full queue."""
        body = Ready(
            ready=serving["ready"] and counters.in_flight < settings.max_queued_requests,
            in_flight=counters.in_flight,
            max_queued_requests=settings.max_queued_requests,
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["info"])
    async def prometheus() -> PlainTextResponse:
        """Prometheus metrics (text format 0.0.4)."""
        return PlainTextResponse(metrics.render(counters), media_type="text/plain; version=0.0.4")

    app.add_middleware(RequestBodyLimit, max_bytes=settings.max_request_bytes)
    keyed = [
        route.path
        for route in app.routes
        if isinstance(route, APIRoute) and any(dependency.dependency is authorize for dependency in route.dependencies)
    ]
    app.add_middleware(ApiKeyGate, settings=settings, paths=keyed)
    routes = [route.path for route in app.routes if isinstance(route, APIRoute)]
    app.add_middleware(FrontDoor, settings=settings, metrics=metrics, routes=routes)
    return app
