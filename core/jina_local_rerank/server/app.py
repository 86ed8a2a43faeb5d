"""``create_app``: the FastAPI application serving Jina's ``/v1/rerank`` and TEI's ``/rerank`` from a local model."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..reranker import Reranker
from .batcher import DirectScorer, MicroBatcher, Scorer
from .schemas import (
    BatchingStats,
    ErrorResponse,
    Health,
    JinaRerankRequest,
    JinaRerankResponse,
    ModelCard,
    ModelList,
    TEIRerankRequest,
    TEIRerankResult,
    jina_response,
    tei_response,
)
from .settings import RequestRejected, ServerSettings

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    404: {"model": ErrorResponse, "description": "The requested model is not served here."},
    413: {"model": ErrorResponse, "description": "Request body, document count or a document over its limit."},
    422: {"model": ErrorResponse, "description": "Wrong types, missing fields or an empty query."},
}


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
                # The client went away; let the app see the disconnect.
                break
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
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def create_app(reranker: Reranker, settings: ServerSettings, scorer: Scorer | None = None) -> FastAPI:
    """A FastAPI app scoring with ``reranker`` under ``settings``.

    Routes: ``POST /v1/rerank`` (Jina), ``POST /rerank`` (TEI), ``GET /v1/models``, ``GET /health`` (never needs
    the API key), ``GET /docs`` and ``/openapi.json``. Errors are JSON ``{"detail": ...}`` with status 401, 404,
    413 or 422. Scoring runs in a worker thread through a :class:`MicroBatcher` (or a :class:`DirectScorer` when
    ``settings.batching`` is off), started and stopped with the app's lifespan; ``scorer``, if given, replaces
    them (the Ray Serve deployment passes its ``@serve.batch`` scorer).
    """
    if scorer is None:
        if settings.batching:
            scorer = MicroBatcher(
                reranker, max_wait_ms=settings.batch_wait_ms, max_concurrent_batches=settings.batch_concurrency
            )
        else:
            scorer = DirectScorer(reranker)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await scorer.start()
        try:
            yield
        finally:
            await scorer.stop()

    app = FastAPI(
        title="jina-local-rerank",
        version=__version__,
        description="A self-hosted, drop-in Jina Reranker API (and TEI /rerank) running a local JinaBERT "
        "cross-encoder. Send 'Authorization: Bearer <key>' when the server was started with an API key.",
        lifespan=lifespan,
    )
    app.state.scorer = scorer
    app.add_middleware(RequestBodyLimit, max_bytes=settings.max_request_bytes)
    bearer = HTTPBearer(auto_error=False, description="The server's API key, if it was started with one.")

    async def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        settings.check_api_key(None if credentials is None else credentials.credentials)

    @app.exception_handler(RequestRejected)
    async def rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, so uvicorn logs its traceback.
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.post(
        "/v1/rerank",
        response_model=JinaRerankResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(authorize)],
        responses=_ERRORS,
        tags=["rerank"],
        summary="Rank documents for a query (Jina Reranker API)",
    )
    async def jina_rerank(body: JinaRerankRequest) -> JinaRerankResponse:
        model = settings.resolve_model(body.model)
        documents = body.document_texts()
        settings.check_request(body.query, documents)
        result = await scorer.score(body.query, documents)
        return jina_response(body, result, model)

    @app.post(
        "/rerank",
        response_model=list[TEIRerankResult],
        response_model_exclude_none=True,
        dependencies=[Depends(authorize)],
        responses=_ERRORS,
        tags=["rerank"],
        summary="Rank texts for a query (Text Embeddings Inference API)",
    )
    async def tei_rerank(body: TEIRerankRequest) -> list[TEIRerankResult]:
        settings.check_request(body.query, body.texts, "texts")
        result = await scorer.score(body.query, body.texts)
        if not body.truncate and result.num_truncated:
            over = [index for index, cut in enumerate(result.truncated) if cut]
            raise RequestRejected(
                413,
                f"texts {over} are longer than the model's window of {reranker.max_length} tokens; "
                "send truncate=true to score them truncated",
            )
        return tei_response(body, result)

    @app.get(
        "/v1/models", response_model=ModelList, dependencies=[Depends(authorize)], responses=_ERRORS, tags=["info"]
    )
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name) for name in settings.served_model_names])

    @app.get("/health", response_model=Health, tags=["info"])
    async def health() -> Health:
        counters = scorer.counters
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
                in_flight=counters.in_flight,
            ),
        )

    return app
