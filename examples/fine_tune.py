"""Fine-tune a reranker on your own data, then rerank with it: the Python API of ``jina-local-rerank train``.

Writes a few training triplets and a held-out set as JSON Lines, fine-tunes the model on them (evaluating before
and after), and reranks a query with the saved checkpoint, which loads like any other model.

    python examples/fine_tune.py --model /path/to/jina-reranker-v1-tiny-en --output ./my-reranker

Without ``--model`` the model is ``$JINA_LOCAL_RERANK_MODEL``, else ``jinaai/jina-reranker-v1-tiny-en`` from the
Hugging Face Hub. The same run from the shell: ``jina-local-rerank train --model M --train train.jsonl
--eval eval.jsonl --output ./my-reranker``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from jina_local_rerank import Reranker, RerankerOptions
from jina_local_rerank.checkpoint import default_model
from jina_local_rerank.training import Trainer, TrainingConfig

# Each query with its answer and two wrong ones: the shape of most click logs and labelled sets.
TRAIN = [
    (
        "how do I feed a sourdough starter",
        "Feed the starter equal weights of flour and water every day.",
        ["Prune roses in early spring.", "Oil a bicycle chain every few hundred kilometres."],
    ),
    (
        "when should roses be pruned",
        "Prune roses in early spring, just above an outward facing bud.",
        ["Feed the starter equal weights of flour and water every day.", "Python lists keep insertion order."],
    ),
    (
        "do python dictionaries keep insertion order",
        "Since Python 3.7 dictionaries keep insertion order.",
        ["Water tomato plants deeply twice a week.", "Steam in the oven gives bread a crisp crust."],
    ),
    (
        "how often to water tomatoes",
        "Water tomato plants deeply twice a week, more in a heat wave.",
        ["Dictionaries map keys to values.", "A bicycle chain needs oil to keep from rusting."],
    ),
    (
        "how to keep a bike chain from rusting",
        "Oil a bicycle chain every few hundred kilometres.",
        ["Roses need pruning in spring.", "Sourdough rises with wild yeast."],
    ),
    (
        "what gives bread a crisp crust",
        "Steam in the oven during the first minutes gives bread a crisp crust.",
        ["Tomatoes like deep watering.", "Lists grow when items are appended."],
    ),
]
# Held-out queries with graded candidates (1: relevant, 0: not).
HELD_OUT = [
    (
        "how do I make bread crust crispy",
        {"Bake with steam for a crisp crust.": 1, "Prune roses above a bud.": 0, "Oil the chain of a bicycle.": 0},
    ),
    (
        "how often does a sourdough starter need feeding",
        {
            "Roses bloom in June.": 0,
            "A sourdough starter is fed flour and water daily.": 1,
            "Dictionaries keep insertion order.": 0,
        },
    ),
]
QUERY = "how should I look after a sourdough starter"
DOCUMENTS = [
    "Feed a sourdough starter flour and water every day to keep it alive.",
    "Prune roses in early spring above an outward facing bud.",
    "Oil a bicycle chain every few hundred kilometres.",
]


def write_data(folder: Path) -> tuple[Path, Path]:
    """``TRAIN`` as triplets and ``HELD_OUT`` as labelled lists."""
    train, held_out = folder / "train.jsonl", folder / "eval.jsonl"
    with train.open("w", encoding="utf-8") as rows:
        for query, positive, negatives in TRAIN:
            rows.write(json.dumps({"query": query, "positive": positive, "negatives": negatives}) + "\n")
    with held_out.open("w", encoding="utf-8") as rows:
        for query, judged in HELD_OUT:
            row = {"query": query, "documents": list(judged), "labels": list(judged.values())}
            rows.write(json.dumps(row) + "\n")
    return train, held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local model directory or Hub id (default: $JINA_LOCAL_RERANK_MODEL)")
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda:0', 'mps' (default: the best available)")
    parser.add_argument("--output", default=None, help="where the fine-tuned checkpoint goes (default: temporary)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        train, held_out = write_data(Path(folder))
        output = Path(args.output) if args.output else Path(folder) / "my-reranker"
        trainer = Trainer(
            RerankerOptions(model=args.model or default_model(), device=args.device, max_length=128),
            train=train,
            eval=held_out,
            output=output,
            config=TrainingConfig(epochs=3, learning_rate=1e-4, negatives=2, step_tokens=1024, show_progress="never"),
            overwrite=True,
        )
        result = trainer.fit()
        print(f"trained {result.steps} steps on {result.data['queries']} queries, {result.tokens} tokens")
        print(f"ndcg@10 before {result.before['ndcg@10']:.4f} after {result.after['ndcg@10']:.4f}")

        reranker = Reranker(output, device=args.device, max_length=128)  # the saved folder, like any model
        print(f"query: {QUERY}")
        for rank, hit in enumerate(reranker.rerank(QUERY, DOCUMENTS), start=1):
            print(f"{rank}. {hit['relevance_score']:.4f}  {hit['document']['text']}")


if __name__ == "__main__":
    main()
