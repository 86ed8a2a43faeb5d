"""``JinaLocalCrossEncoder``: the local Jina reranker v1 as a LangChain ``BaseCrossEncoder``."""

from __future__ import annotations

try:  # the class CrossEncoderReranker checks against: langchain-classic's where installed, else core's (>= 1.2.19)
    from langchain_classic.retrievers.document_compressors.cross_encoder import BaseCrossEncoder
except ImportError:
    from langchain_core.cross_encoders import BaseCrossEncoder

from typing import Any

from pydantic import model_validator

from jina_local_rerank.pydantic_options import apply_aliases

from .settings import RerankerSettings


class JinaLocalCrossEncoder(RerankerSettings, BaseCrossEncoder):
    """Scores (query, document) pairs for LangChain's stock ``CrossEncoderReranker``.

    Scores are sigmoid probabilities in 0..1 (logits with ``raw_scores=True``). Engine settings are those of
    :class:`~jina_local_rerank.Reranker`; the weights are loaded on first use and shared across the process.
    ``model_name`` is accepted for ``model``, as ``HuggingFaceCrossEncoder`` spells it, so swapping one for the
    other is a one-word change.
    """

    @model_validator(mode="before")
    @classmethod
    def _model_name(cls, data: Any) -> Any:
        return apply_aliases(data, {"model_name": "model"})

    @property
    def model_name(self) -> str | None:
        """The checkpoint (``model``), under ``HuggingFaceCrossEncoder``'s name for it."""
        return self.model

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """One score per ``(query, document)`` pair, in input order."""
        return self.reranker.score_pairs(text_pairs, raw=self.raw_scores).scores
