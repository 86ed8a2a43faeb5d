"""LangChain integration of jina-local-rerank: a document compressor and a cross-encoder."""

from jina_local_rerank.install_hints import extra_imports

with extra_imports("the LangChain adapter", "langchain"):
    from .compressor import JinaLocalRerank
    from .cross_encoder import JinaLocalCrossEncoder

__all__ = ["JinaLocalCrossEncoder", "JinaLocalRerank"]
