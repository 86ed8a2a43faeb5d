"""Score a JSONL file of (query, document) pairs with Ray Data: one actor, the model loaded once in it.

    pip install ".[ray]"    # in a checkout (see the docs' Install section for a wheel or git URL)
    python examples/ray_batch_scoring.py --model /path/to/jina-reranker-v1-tiny-en

Without ``--model`` the model is ``$JINA_LOCAL_RERANK_MODEL``, else ``jinaai/jina-reranker-v1-tiny-en`` from the
Hugging Face Hub. Writes every query paired with every document to ``pairs.jsonl`` in ``--workdir`` (default: a
new temporary folder), scores it on a local Ray instance into ``scored.jsonl`` (the same rows, in order, plus a
``score`` column), then prints the row count and each query's best document with its score.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import ray

from jina_local_rerank import RerankerOptions
from jina_local_rerank.ray import score_pairs_file

QUERIES = [
    "Organic skincare products for sensitive skin",
    "How do I return a value from a Python function?",
    "Where do llamas come from?",
]
DOCUMENTS = [
    "Natural organic skincare range for sensitive skin",
    "Eco-friendly kitchenware for modern homes",
    "The return statement ends a function call and hands back a value.",
    "Llamas are camelids domesticated in the Andes of South America.",
    "Yoga mats made from recycled materials",
    "Sensitive skin-friendly facial cleansers and toners",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="local directory or Hub id (default: $JINA_LOCAL_RERANK_MODEL, else jinaai/jina-reranker-v1-tiny-en)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="folder for pairs.jsonl and scored.jsonl")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ray-batch-scoring-"))
    pairs, scored = workdir / "pairs.jsonl", workdir / "scored.jsonl"
    with open(pairs, "w", encoding="utf-8") as out:
        for query in QUERIES:
            for document in DOCUMENTS:
                out.write(json.dumps({"query": query, "document": document}) + "\n")

    # A single-machine instance on loopback; ray.init(address="auto") joins a running cluster instead.
    ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    rows = score_pairs_file(pairs, scored, options=RerankerOptions(model=args.model), num_actors=1)
    ray.shutdown()

    print(f"scored {rows} pairs into {scored.name}")
    best: dict[str, dict] = {}
    for line in scored.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["query"] not in best or row["score"] > best[row["query"]]["score"]:
            best[row["query"]] = row
    for query in QUERIES:
        print(f"{query} -> {best[query]['document']} ({best[query]['score']:.4f})")


if __name__ == "__main__":
    main()
