"""Haystack integration: ``JinaLocalRanker``, a local Jina reranker v1 component for pipelines."""

from jina_local_rerank.install_hints import extra_imports

with extra_imports("the Haystack adapter", "haystack"):
    from .ranker import JinaLocalRanker

__all__ = ["JinaLocalRanker"]
