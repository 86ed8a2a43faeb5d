"""LlamaIndex node postprocessor for the local Jina reranker: ``JinaLocalRerank(top_n=3)``."""

from jina_local_rerank.install_hints import extra_imports

with extra_imports("the LlamaIndex adapter", "llama-index"):
    from .base import JinaLocalRerank

__all__ = ["JinaLocalRerank"]
