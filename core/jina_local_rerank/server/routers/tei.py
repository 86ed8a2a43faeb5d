"""Hugging Face Text Embeddings Inference's rerank API: ``POST /rerank`` and ``GET /info``, with TEI's error
shape (:data:`~jina_local_rerank.server.error_responses.TEI_ROUTES`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ... import __version__
from ...errors import RequestRejected
from ...reranker import Reranker
from ...validation import torch_name
from ..dependencies import authorize
from ..error_responses import TEI_ERROR_RESPONSES
from ..request_body import CheckedBodyRoute
from ..schemas import TEIInfo, TEIRerankRequest, TEIRerankResult, tei_response
from ..scoring import score
from ..settings import ServerSettings


class TextsRoute(CheckedBodyRoute):
    """TEI's body holds its documents in ``texts``, at most ``max_client_batch_size`` of them."""

    documents_field = "texts"

    @staticmethod
    def documents_limit(settings: ServerSettings) -> int:
        return settings.max_client_batch_size


router = APIRouter(route_class=TextsRoute)


@router.post(
    "/rerank",
    response_model=list[TEIRerankResult],
    response_model_exclude_none=True,
    dependencies=[Depends(authorize)],
    responses=TEI_ERROR_RESPONSES,
    tags=["rerank"],
    summary="Rank texts for a query (Text Embeddings Inference API)",
)
async def tei_rerank(body: TEIRerankRequest, request: Request) -> list[TEIRerankResult]:
    if not body.texts:
        raise RequestRejected(400, "`texts` cannot be empty")
    settings: ServerSettings = request.app.state.settings
    result = await score(
        request,
        body.query,
        body.texts,
        TextsRoute.documents_field,
        max_documents=TextsRoute.documents_limit(settings),
        truncation=settings.auto_truncate if body.truncate is None else body.truncate,
        truncation_side=body.truncation_direction.lower(),
    )
    return tei_response(body, result)


@router.get(
    "/info", response_model=TEIInfo, dependencies=[Depends(authorize)], responses=TEI_ERROR_RESPONSES, tags=["info"]
)
async def info(request: Request) -> TEIInfo:
    """The served model and limits, with TEI's fields."""
    settings: ServerSettings = request.app.state.settings
    reranker: Reranker = request.app.state.reranker
    return TEIInfo(
        model_id=settings.served_model_names[0],
        model_dtype=torch_name(reranker.dtype),
        max_concurrent_requests=settings.max_queued_requests,
        max_input_length=reranker.max_length,
        max_batch_tokens=reranker.max_batch_tokens,
        max_client_batch_size=settings.max_client_batch_size,
        auto_truncate=settings.auto_truncate,
        version=__version__,
    )
