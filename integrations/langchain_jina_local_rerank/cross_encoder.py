"""``JinaLocalCrossEncoder``: the local Jina reranker v1 as a LangChain ``BaseCrossEncoder``."""

from __future__ import annotations

try:  # the class CrossEncoderReranker checks against: langchain-classic's where installed, else core's (>= 1.2.19)
    from langchain_classic.retrievers.document_compressors.cross_encoder import BaseCrossEncoder
except ImportError:
    from langchain_core.cross_encoders import BaseCrossEncoder

from .settings import RerankerSettings


class JinaLocalCrossEncoder(RerankerSettings, BaseCrossEncoder):
    """Scores (query, document) pairs for LangChain's stock ``CrossEncoderReranker``.

    Scores are sigmoid probabilities in 0..1 (logits with ``raw_scores=True``). Engine settings are those of
    :class:`~jina_local_rerank.Reranker`; the weights are loaded on first use and shared across the process.
    """

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """One score per ``(query, document)`` pair, in input order."""
        return self.reranker.score_pairs(text_pairs, raw=self.raw_scores).scores
