"""Cohere's v2 rerank API: ``POST /v2/rerank``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..dependencies import authorize
from ..error_responses import ERROR_RESPONSES
from ..middleware import request_id
from ..request_body import CheckedBodyRoute
from ..schemas import CohereRerankRequest, CohereRerankResponse, cohere_v2_response
from ..scoring import score
from ..settings import ServerSettings

router = APIRouter(route_class=CheckedBodyRoute)


@router.post(
    "/v2/rerank",
    response_model=CohereRerankResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(authorize)],
    responses=ERROR_RESPONSES,
    tags=["rerank"],
    summary="Rank documents for a query (Cohere v2 API)",
)
async def cohere_rerank(body: CohereRerankRequest, request: Request) -> CohereRerankResponse:
    settings: ServerSettings = request.app.state.settings
    settings.resolve_model(body.model)
    result = await score(request, body.query, body.document_texts(), max_document_length=body.max_tokens_per_doc)
    return cohere_v2_response(body, result, request_id(request))
