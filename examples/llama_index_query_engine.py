"""A LlamaIndex query engine whose retrieved nodes are reranked by the local Jina reranker, end to end offline.

    python examples/llama_index_query_engine.py --model /path/to/jina-reranker-v1-tiny-en

A SummaryIndex hands every node to the postprocessor (so no embedding model is needed here), JinaLocalRerank
keeps the best ``--top-n`` and MockLLM stands in for the LLM. Prints the query, then one line per kept node:
``rank. node_id score``. In an application use a VectorStoreIndex with your embedding model and your LLM:
``index.as_query_engine(similarity_top_k=10, node_postprocessors=[JinaLocalRerank(top_n=3)])``.
"""

from __future__ import annotations

import argparse

from llama_index.core import SummaryIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode

from llama_index.postprocessor.jina_local_rerank import JinaLocalRerank

QUERY = "How do I keep a sourdough starter healthy?"

PASSAGES = {
    "starter-feeding": (
        "Baking",
        "Feed a sourdough starter equal weights of flour and water once a day and keep it at room temperature.",
    ),
    "starter-fridge": (
        "Baking",
        "A starter kept in the fridge needs feeding only once a week; let it warm up and bubble before baking.",
    ),
    "bread-crust": ("Baking", "A hot Dutch oven and steam in the first twenty minutes give bread a crisp crust."),
    "tomato-watering": ("Gardening", "Water tomato plants deeply at the base twice a week rather than daily."),
    "python-lists": ("Programming", "Python lists keep insertion order and grow as items are appended."),
    "bike-chain": ("Cycling", "Clean and oil a bicycle chain every few hundred kilometres to stop it rusting."),
}


def build_nodes() -> list[TextNode]:
    """One node per passage, with fixed ids and a ``topic`` metadata field (scored too, as MetadataMode.EMBED)."""
    return [TextNode(id_=node_id, text=text, metadata={"topic": topic}) for node_id, (topic, text) in PASSAGES.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="local model directory or Hub id "
        "(default: $JINA_LOCAL_RERANK_MODEL, else jinaai/jina-reranker-v1-tiny-en)",
    )
    parser.add_argument("--top-n", type=int, default=3, help="nodes to keep (default: 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--query", default=QUERY)
    args = parser.parse_args(argv)

    reranker = JinaLocalRerank(model=args.model, top_n=args.top_n, device=args.device)
    query_engine = SummaryIndex(build_nodes()).as_query_engine(llm=MockLLM(), node_postprocessors=[reranker])
    response = query_engine.query(args.query)

    print(f"query: {args.query}")
    for rank, scored in enumerate(response.source_nodes, start=1):
        print(f"{rank}. {scored.node.node_id} {scored.score:.4f}")


if __name__ == "__main__":
    main()
