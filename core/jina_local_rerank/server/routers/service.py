"""The service's own routes: ``GET /v1/models`` (the served names), ``GET /health`` (liveness), ``GET /ready``
(readiness) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from ...reranker import Reranker
from ...validation import torch_name
from ..batcher import Scorer
from ..dependencies import authorize
from ..error_responses import ERROR_RESPONSES
from ..metrics import ServerMetrics
from ..schemas import BatchingStats, Health, ModelCard, ModelList, Ready
from ..settings import ServerSettings

router = APIRouter()


@router.get(
    "/v1/models", response_model=ModelList, dependencies=[Depends(authorize)], responses=ERROR_RESPONSES, tags=["info"]
)
async def models(request: Request) -> ModelList:
    settings: ServerSettings = request.app.state.settings
    return ModelList(data=[ModelCard(id=name) for name in settings.served_model_names])


@router.get("/health", response_model=Health, tags=["info"])
async def health(request: Request) -> Health:
    """Liveness: answers while the process runs, with the model and the batching counters."""
    settings: ServerSettings = request.app.state.settings
    reranker: Reranker = request.app.state.reranker
    scorer: Scorer = request.app.state.scorer
    counters = scorer.counters
    return Health(
        model=settings.served_model_names[0],
        device=str(reranker.device),
        dtype=torch_name(reranker.dtype),
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


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}}, tags=["info"])
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 while the server takes requests; 503 while starting, stopping or with a full queue."""
    settings: ServerSettings = request.app.state.settings
    in_flight = request.app.state.scorer.counters.in_flight
    body = Ready(
        ready=request.app.state.ready and settings.has_capacity(in_flight),
        in_flight=in_flight,
        max_queued_requests=settings.max_queued_requests,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse, tags=["info"])
async def prometheus(request: Request) -> PlainTextResponse:
    """Prometheus metrics (text format 0.0.4)."""
    metrics: ServerMetrics = request.app.state.metrics
    return PlainTextResponse(metrics.render(request.app.state.scorer.counters), media_type="text/plain; version=0.0.4")
