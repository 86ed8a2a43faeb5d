"""Engine settings shared by the LangChain compressor and cross-encoder, and the :class:`Reranker` they use."""

from __future__ import annotations

from pydantic import ConfigDict

from jina_local_rerank import Reranker, reranker_for
from jina_local_rerank.pydantic_options import RerankerOptionFields


class RerankerSettings(RerankerOptionFields):
    """Which model to load and how to score with it: the fields of
    :class:`~jina_local_rerank.options.RerankerOptions` (lengths in tokens), plus ``raw_scores``."""

    model_config = ConfigDict(extra="forbid")

    raw_scores: bool = False
    """Report raw logits instead of sigmoid probabilities in 0..1."""

    @property
    def reranker(self) -> Reranker:
        """The process-wide :class:`Reranker` for these settings (the weights load on first use)."""
        return reranker_for(self.engine_options())
