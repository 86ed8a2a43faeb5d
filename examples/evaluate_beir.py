"""Measure the reranker on a dataset of your own, in BEIR layout, through the Python API.

Writes a tiny BEIR dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv) to a temporary folder, retrieves BM25
candidates for each query, reranks them, and prints NDCG@10, MRR@10, recall and hit rate before and after
reranking. Needs the ``eval`` extra (``pip install ".[eval]"`` in a checkout, for BM25).

    python examples/evaluate_beir.py --model /path/to/jina-reranker-v1-tiny-en [--long-document chunk]

Without ``--model`` the model is ``$JINA_LOCAL_RERANK_MODEL``, else ``jinaai/jina-reranker-v1-tiny-en`` from the
Hugging Face Hub. The same evaluation from the shell: ``jina-local-rerank eval DATASET_DIR --bm25``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from jina_local_rerank import Reranker
from jina_local_rerank.evaluation import bm25_first_stage, evaluate, load_beir, select_queries
from jina_local_rerank.evaluation.cli import format_report

CORPUS = {
    "berlin": ("Berlin", "Berlin is the capital of Germany and its largest city."),
    "paris": ("Paris", "Paris is the capital of France, on the river Seine."),
    "bonn": ("Bonn", "Bonn was the capital of West Germany until 1990."),
    "bread": ("Bread", "Bread is baked from flour, water, salt and yeast."),
    "sourdough": ("Sourdough", "Sourdough bread rises with wild yeast instead of baker's yeast."),
    "seine": ("Seine", "The Seine flows through Paris into the English Channel."),
}
QUERIES = {
    "q1": "What is the capital of Germany?",
    "q2": "How does sourdough bread rise?",
    "q3": "Which river flows through Paris?",
}
QRELS = [("q1", "berlin", 2), ("q1", "bonn", 1), ("q2", "sourdough", 2), ("q2", "bread", 1), ("q3", "seine", 2)]


def write_dataset(root: Path) -> Path:
    """Write ``CORPUS``, ``QUERIES`` and ``QRELS`` in BEIR layout under ``root``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for doc_id, (title, text) in CORPUS.items():
            corpus.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as queries:
        for query_id, text in QUERIES.items():
            queries.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    rows = "".join(f"{query_id}\t{doc_id}\t{grade}\n" for query_id, doc_id, grade in QRELS)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local model directory or Hub id (default: $JINA_LOCAL_RERANK_MODEL)")
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda:0', 'mps' (default: the best available)")
    parser.add_argument("--long-document", choices=["truncate", "chunk"], default="truncate")
    parser.add_argument("--top-k", type=int, default=4, help="BM25 candidates reranked per query")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        dataset = load_beir(write_dataset(Path(folder) / "tiny"), split="test")
        query_ids, _ = select_queries(dataset)
        first_stage = bm25_first_stage(dataset, query_ids, args.top_k)
        reranker = Reranker(args.model, device=args.device, long_document=args.long_document)
        report = evaluate(reranker, dataset, first_stage, top_k=args.top_k)
    print(format_report(report, per_query=True), end="")
    print(f"NDCG@10: {report.first_stage['ndcg@10']:.4f} (BM25) -> {report.reranked['ndcg@10']:.4f} (reranked)")
    for query in report.queries:
        print(f"{query.query_id} reranked: {' > '.join(query.ranking)}")


if __name__ == "__main__":
    main()
