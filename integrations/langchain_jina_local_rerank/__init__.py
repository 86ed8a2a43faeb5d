"""LangChain integration of jina-local-rerank: a document compressor and a cross-encoder."""

from .compressor import JinaLocalRerank
from .cross_encoder import JinaLocalCrossEncoder

__all__ = ["JinaLocalCrossEncoder", "JinaLocalRerank"]
