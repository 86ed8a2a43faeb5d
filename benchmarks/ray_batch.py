"""Batch scoring throughput: the Ray Data job with 1 and 2 actors against in-process scoring, same input file.

    python benchmarks/ray_batch.py                          # random weights of the real tiny shape
    python benchmarks/ray_batch.py --model ../shared/parity/tiny --pairs 4000

Writes ``--pairs`` (query, passage) pairs (passages of 24..``--max-words`` words of Python's docs) to a JSONL
file, then scores it end to end (read, score, write one JSONL file): in this process with one ``Reranker``
(``score-pairs`` without ``--ray``; torch's default threads, then one thread), and with ``score_pairs_file`` on a
local Ray instance of ``--num-cpus`` CPUs with 1 and 2 actors of 1 CPU each. Ray times include starting the
actors and loading the model in each (Ray itself is started before timing), as a user running the job would
see. Prints a Markdown table of pairs/s, and checks that every run wrote the same scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ray  # noqa: E402
import workloads  # noqa: E402

from jina_local_rerank import Reranker  # noqa: E402
from jina_local_rerank.files.pairs import score_pairs_file_local  # noqa: E402
from jina_local_rerank.options import RerankerOptions  # noqa: E402
from jina_local_rerank.ray.batch import score_pairs_file  # noqa: E402
from jina_local_rerank.testing.random_checkpoint import TINY_SHAPE, write_random_checkpoint  # noqa: E402


def write_input(path: Path, pairs: int, max_words: int) -> None:
    queries = workloads.queries(max(1, pairs // 20), seed=5)
    passages = workloads.passages(pairs, 24, max_words, seed=6)
    with open(path, "w", encoding="utf-8") as out:
        for index, passage in enumerate(passages):
            out.write(json.dumps({"id": index, "query": queries[index % len(queries)], "document": passage}) + "\n")


def scores_of(path: Path) -> list[float]:
    return [json.loads(line)["score"] for line in path.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: random weights, tiny shape)")
    parser.add_argument("--pairs", type=int, default=2000, help="pairs in the input file (default: 2000)")
    parser.add_argument("--max-words", type=int, default=60, help="longest passage in words (default: 60)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per scoring call (default: 256)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ray-batch-bench-"))
    model = args.model or str(write_random_checkpoint(workdir / "tiny", TINY_SHAPE, tokenizer_vocab=8000))
    source = workdir / "pairs.jsonl"
    write_input(source, args.pairs, args.max_words)
    print(
        f"{args.pairs} pairs, passages of 24-{args.max_words} words; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start; model {model}",
        file=sys.stderr,
    )

    rows = []
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        started = time.perf_counter()
        reranker = Reranker(model, device="cpu")
        score_pairs_file_local(source, workdir / "local.jsonl", reranker=reranker, batch_rows=args.batch_size)
        rows.append(("in-process Reranker", 1, threads, time.perf_counter() - started))

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    for actors in (1, 2):
        started = time.perf_counter()
        score_pairs_file(
            source,
            workdir / f"ray{actors}.jsonl",
            options=RerankerOptions(model=model, device="cpu"),
            num_actors=actors,
            batch_size=args.batch_size,
        )
        # Ray gives an actor of 1 CPU one intra-op thread (OMP_NUM_THREADS=1).
        rows.append((f"Ray Data, {actors} actor{'s' if actors > 1 else ''}", actors, 1, time.perf_counter() - started))
    ray.shutdown()

    expected = scores_of(workdir / "local.jsonl")
    for actors in (1, 2):
        got = scores_of(workdir / f"ray{actors}.jsonl")
        assert len(got) == len(expected) and max(abs(a - b) for a, b in zip(got, expected)) < 1e-5

    print("| run | workers | torch threads each | seconds | pairs/s |")
    print("|---|---:|---:|---:|---:|")
    for name, workers, threads, seconds in rows:
        print(f"| {name} | {workers} | {threads} | {seconds:.1f} | {args.pairs / seconds:.0f} |")


if __name__ == "__main__":
    main()
