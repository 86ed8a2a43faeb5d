"""``JinaLocalRerank``: a LangChain document compressor that reranks with a local Jina reranker v1."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import Field, field_validator

from jina_local_rerank.ranking import ranked_indices
from jina_local_rerank.validation import check_threshold

from .settings import RerankerSettings

RUN_NAME = "JinaLocalRerank"


class JinaLocalRerank(RerankerSettings, BaseDocumentCompressor):
    """Reorders retrieved documents by a local Jina reranker v1 and keeps the best.

    Returns copies, best first (ties keep retrieval order), each with its score in ``metadata[score_key]``;
    the inputs are never modified. Each call shows up to the callbacks passed in as a chain run named
    ``"JinaLocalRerank"``. Engine settings (``model``, ``device``, lengths in tokens...) are those of
    :class:`~jina_local_rerank.Reranker`; the weights are loaded on first use and shared across the process.
    """

    top_n: int | None = Field(default=3, strict=True, ge=1)
    """How many documents to return; None: all."""
    score_threshold: float | None = None
    """Drop documents scoring below this (compared with the score written, a probability unless ``raw_scores``)."""
    score_key: str = "relevance_score"
    """Metadata key the score is written to (replacing any value the input had there)."""
    metadata_fields_to_embed: list[str] | None = None
    """Metadata keys scored along with the text, as ``key: value`` lines before it; None: the text only."""
    metadata_separator: str = "\n"
    """Joins the ``key: value`` lines and the text when ``metadata_fields_to_embed`` is set."""

    @field_validator("score_threshold")
    @classmethod
    def _finite_threshold(cls, value: float | None) -> float | None:
        return check_threshold(value)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank ``documents`` against ``query``: at most ``top_n`` scored copies, best first."""
        manager = CallbackManager.configure(callbacks)
        run = manager.on_chain_start(None, {"query": query, "documents": documents}, name=RUN_NAME)
        try:
            ranked = self._rerank(documents, query)
        except BaseException as error:
            run.on_chain_error(error)
            raise
        run.on_chain_end({"documents": ranked})
        return ranked

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Like :meth:`compress_documents`; loading and scoring run in a worker thread, off the event loop."""
        manager = AsyncCallbackManager.configure(callbacks)
        run = await manager.on_chain_start(None, {"query": query, "documents": documents}, name=RUN_NAME)
        try:
            ranked = await asyncio.to_thread(self._rerank, documents, query)
        except BaseException as error:
            await run.on_chain_error(error)
            raise
        await run.on_chain_end({"documents": ranked})
        return ranked

    def _rerank(self, documents: Sequence[Document], query: str) -> list[Document]:
        texts = self._scored_texts(documents)
        result = self.reranker.score(query, texts, raw=self.raw_scores)
        order = ranked_indices(result.logits, result.scores, top_n=self.top_n, score_threshold=self.score_threshold)
        return [self._scored_copy(documents[index], result.scores[index]) for index in order]

    def _scored_texts(self, documents: Any) -> list[str]:
        """The text scored for each document (with the chosen metadata lines first), checking the input."""
        if isinstance(documents, (str, bytes, Document)) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a sequence of Document, got {type(documents).__name__}")
        texts = []
        for index, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(f"documents[{index}] must be a Document, got {type(document).__name__}")
            texts.append(self._scored_text(document))
        return texts

    def _scored_text(self, document: Document) -> str:
        if not self.metadata_fields_to_embed:
            return document.page_content
        # Metadata goes before the text so that truncating a long document never cuts it off.
        metadata = document.metadata
        lines = [f"{key}: {metadata[key]}" for key in self.metadata_fields_to_embed if key in metadata]
        return self.metadata_separator.join([*lines, document.page_content])

    def _scored_copy(self, document: Document, score: float) -> Document:
        """A new Document sharing nothing mutable with ``document`` (metadata copied deeply), with the score."""
        return Document(
            id=document.id,
            page_content=document.page_content,
            metadata={**copy.deepcopy(document.metadata), self.score_key: float(score)},
        )
