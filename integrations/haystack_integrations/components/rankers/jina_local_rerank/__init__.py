"""Haystack integration: ``JinaLocalRanker``, a local Jina reranker v1 component for pipelines."""

from .ranker import JinaLocalRanker

__all__ = ["JinaLocalRanker"]
