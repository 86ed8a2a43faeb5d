"""``create_app``: the FastAPI application serving the Jina, Cohere v2 and TEI rerank APIs from a local model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from .. import __version__
from ..reranker import Reranker
from .batcher import DirectScorer, MicroBatcher, Scorer
from .dependencies import authorize
from .error_responses import EXCEPTION_HANDLERS
from .metrics import ServerMetrics
from .middleware import ApiKeyGate, HostGate, RequestBodyLimit, RequestLog
from .routers import cohere, jina, service, tei
from .settings import ServerSettings

# In the order of the OpenAPI description.
ROUTERS = (jina.router, cohere.router, tei.router, service.router)


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
    app = FastAPI(
        title="jina-local-rerank",
        version=__version__,
        description="A self-hosted, drop-in rerank API running a local JinaBERT cross-encoder: Jina's "
        "/v1/rerank (which Cohere v1 clients speak too), Cohere's /v2/rerank and TEI's /rerank. Send "
        "'Authorization: Bearer <key>' when the server was started with an API key.",
        lifespan=_lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    # What the routes and the lifespan share (read through request.app.state).
    app.state.settings = settings
    app.state.reranker = reranker
    app.state.scorer = scorer or _default_scorer(reranker, settings)
    app.state.metrics = ServerMetrics()
    app.state.ready = False  # true while the scorer runs (GET /ready)
    for router in ROUTERS:
        app.include_router(router)
    # From the routers: app.routes holds their inclusions, not their routes, in newer FastAPI.
    routes = [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
    keyed = [route.path for route in routes if any(dep.dependency is authorize for dep in route.dependencies)]
    # Added innermost first: a request meets RequestLog, HostGate, ApiKeyGate, RequestBodyLimit, then the routes.
    app.add_middleware(RequestBodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(ApiKeyGate, settings=settings, paths=keyed)
    app.add_middleware(HostGate, settings=settings)
    app.add_middleware(RequestLog, metrics=app.state.metrics, routes=[route.path for route in routes])
    return app


def _default_scorer(reranker: Reranker, settings: ServerSettings) -> Scorer:
    """A :class:`MicroBatcher` under the settings' batching, or a :class:`DirectScorer` with batching off."""
    if not settings.batching:
        return DirectScorer(reranker)
    return MicroBatcher(
        reranker,
        max_wait_ms=settings.batch_wait_ms,
        max_concurrent_batches=settings.batch_concurrency,
        slice_tokens=settings.batch_slice_tokens,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the scorer while the app serves; ready in between."""
    scorer: Scorer = app.state.scorer
    await scorer.start()
    app.state.ready = True
    try:
        yield
    finally:
        app.state.ready = False
        await scorer.stop()
