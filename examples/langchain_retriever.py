"""Rerank a LangChain retriever's results with a local Jina reranker v1.

A first-stage retriever (an in-memory vector store over a toy keyword embedding, so nothing is downloaded) finds
candidates; ``JinaLocalRerank`` inside a ``ContextualCompressionRetriever`` keeps the best ``--top-n`` of them.

    python examples/langchain_retriever.py --model /path/to/jina-reranker-v1-tiny-en
"""

from __future__ import annotations

import argparse
import math
import re
import zlib

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_jina_local_rerank import JinaLocalRerank

CORPUS = {
    "rust-ownership": "Rust manages memory through ownership and borrowing, checked at compile time.",
    "python-gc": "CPython frees memory by reference counting, with a cycle collector for reference cycles.",
    "go-gc": "Go has a concurrent mark-and-sweep garbage collector tuned for low pause times.",
    "java-gc": "The JVM offers several garbage collectors, such as G1 and ZGC, for managing heap memory.",
    "tea": "Green tea is steeped at a lower temperature than black tea.",
    "bread": "Sourdough bread rises with wild yeast and lactic acid bacteria.",
    "c-malloc": "In C, memory from malloc must be released with free, or the program leaks it.",
    "swift-arc": "Swift uses automatic reference counting to free objects that are no longer referenced.",
}


class KeywordEmbeddings(Embeddings):
    """Toy offline embedding: lowercase words hashed into ``size`` buckets, L2-normalised."""

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.size
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[zlib.crc32(word.encode()) % self.size] += 1.0
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="model directory or Hub id (default: $JINA_LOCAL_RERANK_MODEL, else jinaai/jina-reranker-v1-tiny-en)",
    )
    parser.add_argument("--query", default="How do garbage collectors free memory?")
    parser.add_argument("--candidates", type=int, default=6, help="documents the first stage retrieves")
    parser.add_argument("--top-n", type=int, default=3, help="documents kept after reranking")
    args = parser.parse_args()

    store = InMemoryVectorStore(KeywordEmbeddings())
    store.add_documents(
        [Document(page_content=text, metadata={"source": doc_id}) for doc_id, text in CORPUS.items()],
        ids=list(CORPUS),
    )
    base = store.as_retriever(search_kwargs={"k": args.candidates})
    retriever = ContextualCompressionRetriever(
        base_compressor=JinaLocalRerank(model=args.model, top_n=args.top_n), base_retriever=base
    )

    print(f"query: {args.query}")
    print(f"candidates: {' '.join(doc.id for doc in base.invoke(args.query))}")
    for doc in retriever.invoke(args.query):
        print(f"{doc.metadata['relevance_score']:.6f}  {doc.id}  {doc.page_content}")


if __name__ == "__main__":
    main()
