"""Jina's Reranker API: ``POST /v1/rerank`` (Cohere's v1 clients speak it too)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..dependencies import authorize
from ..error_responses import ERROR_RESPONSES
from ..request_body import CheckedBodyRoute
from ..schemas import JinaRerankRequest, JinaRerankResponse, jina_response
from ..scoring import score
from ..settings import ServerSettings

router = APIRouter(route_class=CheckedBodyRoute)


@router.post(
    "/v1/rerank",
    response_model=JinaRerankResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(authorize)],
    responses=ERROR_RESPONSES,
    tags=["rerank"],
    summary="Rank documents for a query (Jina Reranker API; Cohere v1 clients too)",
)
async def jina_rerank(body: JinaRerankRequest, request: Request) -> JinaRerankResponse:
    settings: ServerSettings = request.app.state.settings
    model = settings.resolve_model(body.model)
    result = await score(request, body.query, body.document_texts())
    return jina_response(body, result, model)
