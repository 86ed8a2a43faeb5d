"""Every rerank route's path to the model: check the request, tokenize it once, check the encoding, score."""

from __future__ import annotations

import asyncio
import functools

from fastapi import Request

from ..reranker import Reranker, ScoreResult
from .batcher import Scorer
from .settings import ServerSettings

# Requests of at most this many characters are tokenized on the event loop (well under a millisecond); longer
# ones in a worker thread, so a large request never stalls the loop.
INLINE_TOKENIZE_CHARS = 16_384


async def score(
    request: Request,
    query: str,
    documents: list[str],
    field_name: str = "documents",
    *,
    max_documents: int | None = None,
    truncation: bool = True,
    truncation_side: str = "right",
    max_document_length: int | None = None,
) -> ScoreResult:
    """The scores of ``documents`` for ``query`` with the app's reranker and scorer, under its settings.

    ``field_name`` names the documents in error messages; ``max_documents`` replaces the settings' limit (TEI's
    ``max_client_batch_size``); ``truncation`` False refuses documents longer than the window (413);
    ``truncation_side`` and ``max_document_length`` are :meth:`Reranker.encode`'s.
    """
    settings: ServerSettings = request.app.state.settings
    reranker: Reranker = request.app.state.reranker
    scorer: Scorer = request.app.state.scorer
    counters = scorer.counters
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
