"""LlamaIndex node postprocessor for the local Jina reranker: ``JinaLocalRerank(top_n=3)``."""

from .base import JinaLocalRerank

__all__ = ["JinaLocalRerank"]
