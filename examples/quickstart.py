"""The model card's example: rerank 10 product descriptions for one query with the local Jina reranker.

    python examples/quickstart.py --model /path/to/jina-reranker-v1-tiny-en

Without ``--model`` the model is ``$JINA_LOCAL_RERANK_MODEL``, else ``jinaai/jina-reranker-v1-tiny-en`` from the
Hugging Face Hub. Prints the best ``--top-n`` documents (Jina API shape: score 0..1 and text), then the order of
all documents by index (sentence-transformers shape).
"""

from __future__ import annotations

import argparse

from jina_local_rerank import Reranker

QUERY = "Organic skincare products for sensitive skin"
DOCUMENTS = [
    "Eco-friendly kitchenware for modern homes",
    "Biodegradable cleaning supplies for eco-conscious consumers",
    "Organic cotton baby clothes for sensitive skin",
    "Natural organic skincare range for sensitive skin",
    "Tech gadgets for smart homes: 2024 edition",
    "Sustainable gardening tools and compost solutions",
    "Sensitive skin-friendly facial cleansers and toners",
    "Organic food wraps and storage solutions",
    "All-natural pet food for dogs with allergies",
    "Yoga mats made from recycled materials",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="local directory or Hub id (default: $JINA_LOCAL_RERANK_MODEL, else jinaai/jina-reranker-v1-tiny-en)",
    )
    parser.add_argument("--top-n", type=int, default=3, help="documents to print with their scores")
    args = parser.parse_args()

    reranker = Reranker(args.model)
    print(f"query: {QUERY}")
    for rank, result in enumerate(reranker.rerank(QUERY, DOCUMENTS, top_n=args.top_n), start=1):
        print(f"{rank}. {result['relevance_score']:.4f}  {result['document']['text']}")

    # The same ranking in sentence-transformers' CrossEncoder.rank shape: corpus ids, best first.
    order = [entry["corpus_id"] for entry in reranker.rank(QUERY, DOCUMENTS)]
    print("order:", " ".join(map(str, order)))


if __name__ == "__main__":
    main()
