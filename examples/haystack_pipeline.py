"""BM25 retrieval, then local Jina reranking, in a Haystack pipeline.

    python examples/haystack_pipeline.py --model /path/to/jina-reranker-v1-tiny-en

Without ``--model`` the model is ``$JINA_LOCAL_RERANK_MODEL``, else ``jinaai/jina-reranker-v1-tiny-en`` from the
Hugging Face Hub. Prints the query, then one line per reranked document: rank, score (0..1) and text.
"""

import argparse

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice

from haystack_integrations.components.rankers.jina_local_rerank import JinaLocalRanker

DOCUMENTS = [
    "Berlin is the capital of Germany and its largest city.",
    "Paris is the capital of France, on the river Seine.",
    "Madrid is the capital of Spain.",
    "The capital of Italy is Rome, founded, legend says, in 753 BC.",
    "Germany borders nine countries; its capital has about 3.7 million inhabitants.",
    "Bread is baked from flour, water, salt and yeast.",
]
QUERY = "What is the capital of Germany?"


def build_pipeline(model: str | None, device: str | None, top_k: int) -> Pipeline:
    """Index ``DOCUMENTS`` in memory and wire retriever -> ranker."""
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=text) for text in DOCUMENTS])
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=5))
    ranker_device = ComponentDevice.from_str(device) if device else None
    pipeline.add_component("ranker", JinaLocalRanker(model, device=ranker_device, top_k=top_k))
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local model directory or Hub id (default: $JINA_LOCAL_RERANK_MODEL)")
    parser.add_argument("--device", help="'cpu', 'cuda:0', 'mps' (default: the best available)")
    parser.add_argument("--query", default=QUERY)
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()

    pipeline = build_pipeline(args.model, args.device, args.top_k)
    result = pipeline.run({"retriever": {"query": args.query}, "ranker": {"query": args.query}})
    print(f"query: {args.query}")
    for rank, doc in enumerate(result["ranker"]["documents"], start=1):
        print(f"{rank}. {doc.score:.4f}  {doc.content}")


if __name__ == "__main__":
    main()
