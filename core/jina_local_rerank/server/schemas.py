"""Request and response models of the rerank API (they double as its OpenAPI documentation).

Three shapes: Jina's Reranker API (``POST /v1/rerank``, which Cohere's v1 clients also speak), Cohere's v2
(``POST /v2/rerank``) and Hugging Face Text Embeddings Inference's (``POST /rerank``, ``GET /info``). Fields a
client sends that are not listed here are ignored, as the hosted APIs do, so that clients written for newer API
versions still work. :func:`jina_response`, :func:`cohere_v2_response` and :func:`tei_response` turn scores into
responses without any web framework, for every server that speaks these shapes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from ..ranking import jina_results, ranked_indices
from ..reranker import ScoreResult

# Cohere bills one search unit per query and up to this many documents.
COHERE_DOCUMENTS_PER_SEARCH_UNIT = 100


class TextDocument(BaseModel):
    """A document given as an object, as Jina's API accepts it."""

    text: StrictStr = Field(description="The document's text.")


class _DocumentsRequest(BaseModel):
    """A request whose ``documents`` are strings or :class:`TextDocument` objects (Jina's and Cohere's); each
    subclass declares the field itself, so its place and description in the schema are the API's."""

    if TYPE_CHECKING:
        documents: list[StrictStr | TextDocument]

    def document_texts(self) -> list[str]:
        """The documents as plain strings, in request order."""
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]


class JinaRerankRequest(_DocumentsRequest):
    """Body of ``POST /v1/rerank``, as Jina's Reranker API defines it."""

    model: StrictStr | None = Field(
        None,
        description="One of the served model names (see GET /v1/models); omitted means the served model.",
        examples=["jina-reranker-v1-tiny-en"],
    )
    query: StrictStr = Field(description="The search query; must not be empty.", examples=["What is a llama?"])
    documents: list[StrictStr | TextDocument] = Field(
        description="Documents to rank: strings, or objects with a 'text' field.",
        fail_fast=True,  # one wrong entry is reported, not one error per entry of a huge list
        examples=[["A llama is a South American camelid.", {"text": "Paris is the capital of France."}]],
    )
    top_n: StrictInt | None = Field(None, ge=1, description="Return only the best N results (default: all documents).")
    return_documents: StrictBool = Field(True, description="Include each document's text in its result.")


class JinaDocument(BaseModel):
    """A returned document, as Jina's API shapes it."""

    text: str


class JinaResult(BaseModel):
    """One ranked document of a Jina response."""

    index: int = Field(description="Position of the document in the request's 'documents'.")
    relevance_score: float = Field(description="Sigmoid of the model's logit, 0..1; higher is more relevant.")
    document: JinaDocument | None = Field(None, description="Present when the request asked return_documents.")


class JinaUsage(BaseModel):
    """Token usage of a Jina response."""

    total_tokens: int = Field(description="Tokens of every (query, document) sequence scored, special tokens included.")
    prompt_tokens: int = Field(description="Same as total_tokens (the model generates nothing).")


class JinaRerankResponse(BaseModel):
    """Response of ``POST /v1/rerank``: results best first."""

    model: str
    usage: JinaUsage
    results: list[JinaResult]


class CohereRerankRequest(_DocumentsRequest):
    """Body of ``POST /v2/rerank``, as Cohere's v2 API defines it."""

    model: StrictStr | None = Field(
        None, description="One of the served model names (Cohere requires it; omitted means the served model)."
    )
    query: StrictStr = Field(description="The search query; must not be empty.", examples=["What is a llama?"])
    documents: list[StrictStr | TextDocument] = Field(
        description="Documents to rank (strings; objects with a 'text' field are accepted too).", fail_fast=True
    )
    top_n: StrictInt | None = Field(None, ge=1, description="Return only the best N results (default: all).")
    max_tokens_per_doc: StrictInt | None = Field(
        None, ge=1, description="Cut every document to this many tokens before scoring (default: the window)."
    )
    return_documents: StrictBool = Field(False, description="Include each document's text (Cohere v1 style).")


class CohereResult(BaseModel):
    """One ranked document of a Cohere v2 response."""

    index: int = Field(description="Position of the document in the request's 'documents'.")
    relevance_score: float = Field(description="Sigmoid of the model's logit, 0..1; higher is more relevant.")
    document: JinaDocument | None = Field(None, description="Present when the request asked return_documents.")


class CohereApiVersion(BaseModel):
    version: str = "2"


class CohereBilledUnits(BaseModel):
    search_units: int = Field(description="One per query and up to 100 documents, as Cohere bills.")


class CohereTokens(BaseModel):
    input_tokens: int = Field(description="Tokens of every (query, document) sequence scored.")


class CohereMeta(BaseModel):
    """Cohere's ``meta`` block: API version and billing."""

    api_version: CohereApiVersion = CohereApiVersion()
    billed_units: CohereBilledUnits
    tokens: CohereTokens


class CohereRerankResponse(BaseModel):
    """Response of ``POST /v2/rerank``: results best first."""

    id: str = Field(description="The request id (also the X-Request-ID header).")
    results: list[CohereResult]
    meta: CohereMeta


class TEIRerankRequest(BaseModel):
    """Body of ``POST /rerank``, as Text Embeddings Inference defines it."""

    query: StrictStr = Field(description="The search query; must not be empty.", examples=["What is a llama?"])
    texts: list[StrictStr] = Field(
        description="Documents to rank.",
        examples=[["A llama is a South American camelid.", "Paris is in France."]],
        fail_fast=True,
    )
    raw_scores: StrictBool = Field(False, description="Return raw logits instead of sigmoid scores.")
    return_text: StrictBool = Field(False, description="Include each text in its result.")
    truncate: StrictBool | None = Field(
        None,
        description="Allow documents longer than the model's window to be truncated; when false such a "
        "request is answered with 413, as TEI does. Absent or null: the server's --auto-truncate (on by default).",
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field(
        "right", description="Which end of a long text is cut: 'right' keeps its start, 'left' keeps its end."
    )


class TEIRerankResult(BaseModel):
    """One ranked text of a TEI ``/rerank`` response."""

    index: int = Field(description="Position of the text in the request's 'texts'.")
    score: float = Field(description="Sigmoid score 0..1, or the raw logit when raw_scores was set.")
    text: str | None = Field(None, description="Present when the request asked return_text.")


class TEIError(BaseModel):
    """Every error answer on TEI's routes, as TEI shapes it."""

    error: str
    error_type: str = Field(description="TEI's kind of error: empty, validation, overloaded, backend, unhealthy.")


class TEIReranker(BaseModel):
    id2label: dict[str, str] = {"0": "LABEL_0"}
    label2id: dict[str, int] = {"LABEL_0": 0}


class TEIModelType(BaseModel):
    reranker: TEIReranker = TEIReranker()


class TEIInfo(BaseModel):
    """Response of ``GET /info``, with TEI's fields."""

    model_id: str = Field(description="The first served model name.")
    model_sha: str | None = None
    model_dtype: str
    model_type: TEIModelType = TEIModelType()
    max_concurrent_requests: int = Field(description="Requests admitted at once; more get 429.")
    max_input_length: int = Field(description="The pair window in tokens.")
    max_batch_tokens: int = Field(description="Tokens per forward pass.")
    max_batch_requests: int | None = None
    max_client_batch_size: int = Field(description="Most texts in one /rerank request.")
    auto_truncate: bool = Field(description="What an absent or null 'truncate' means.")
    tokenization_workers: int = 1
    version: str
    sha: str | None = None
    docker_label: str | None = None


class ModelCard(BaseModel):
    """One served model name in ``GET /v1/models``."""

    id: str
    object: str = "model"
    owned_by: str = "jina-local-rerank"


class ModelList(BaseModel):
    """Response of ``GET /v1/models``: every name a request's 'model' may take."""

    object: str = "list"
    data: list[ModelCard]


class BatchingStats(BaseModel):
    """Micro-batching counters reported by ``GET /health``."""

    enabled: bool = Field(description="Whether concurrent requests are merged into shared scoring calls.")
    requests: int = Field(description="Requests scored since the server started.")
    batches: int = Field(description="Scoring calls made for them; fewer than requests means merging happened.")
    pairs: int = Field(description="(query, document) pairs scored.")
    tokens: int = Field(description="Tokens of the sequences scored.")
    in_flight: int = Field(description="Requests admitted and not answered yet.")


class Health(BaseModel):
    """Response of ``GET /health``."""

    status: str = "ok"
    model: str = Field(description="The first served model name.")
    device: str
    dtype: str
    max_length: int = Field(description="Pair window in tokens.")
    batching: BatchingStats


class Ready(BaseModel):
    """Response of ``GET /ready``."""

    ready: bool = Field(description="False while starting, shutting down or with the request queue full.")
    in_flight: int
    max_queued_requests: int


class ErrorResponse(BaseModel):
    """Every error answer on the Jina and Cohere routes: FastAPI's shape; 422 validation errors carry a list of
    at most 10 problems (``type``, ``loc``, ``msg``; never the input), then a count of the rest."""

    detail: str | list[dict]


def jina_response(request: JinaRerankRequest, result: ScoreResult, model: str) -> JinaRerankResponse:
    """The Jina-API response for ``request`` given its scores.

    ``result`` holds the scores of ``request.document_texts()`` in request order, computed without ``raw`` (the
    Jina API reports sigmoid scores); ``model`` is the name to report (the one the request asked for, or the
    served default). Results come best first by logit (ties keep request order), cut to ``request.top_n``, each
    with its document when ``request.return_documents``. Framework-free: any server (FastAPI here, a Ray Serve
    deployment) can build the answer with it and serialize it with ``model_dump(exclude_none=True)``.
    """
    results = jina_results(
        result, request.document_texts(), top_n=request.top_n, return_documents=request.return_documents
    )
    return JinaRerankResponse(
        model=model,
        usage=JinaUsage(total_tokens=result.num_tokens, prompt_tokens=result.num_tokens),
        results=[JinaResult.model_validate(entry) for entry in results],
    )


def cohere_v2_response(request: CohereRerankRequest, result: ScoreResult, request_id: str) -> CohereRerankResponse:
    """The Cohere v2 response for ``request`` given its scores (sigmoid): best first, cut to ``top_n``, with
    Cohere's ``meta`` (search units: one per query and 100 documents; input tokens). Framework-free."""
    texts = request.document_texts()
    results = [
        CohereResult(
            index=index,
            relevance_score=result.scores[index],
            document=JinaDocument(text=texts[index]) if request.return_documents else None,
        )
        for index in ranked_indices(result.logits, top_n=request.top_n)
    ]
    units = max(1, math.ceil(len(texts) / COHERE_DOCUMENTS_PER_SEARCH_UNIT))
    meta = CohereMeta(
        billed_units=CohereBilledUnits(search_units=units), tokens=CohereTokens(input_tokens=result.num_tokens)
    )
    return CohereRerankResponse(id=request_id, results=results, meta=meta)


def tei_response(request: TEIRerankRequest, result: ScoreResult) -> list[TEIRerankResult]:
    """The TEI response for ``request`` given its scores (computed without ``raw``): best first by logit.

    Scores are sigmoid, or the logits when ``request.raw_scores``; each result carries its text when
    ``request.return_text``. Framework-free, like :func:`jina_response`.
    """
    scores = result.logits if request.raw_scores else result.scores
    return [
        TEIRerankResult(index=index, score=scores[index], text=request.texts[index] if request.return_text else None)
        for index in ranked_indices(result.logits)
    ]
