"""onnxruntime on the exported graph against the engine on CPU, same run; and int8's ranking agreement with fp32.

    python benchmarks/export_onnx.py                              # speed table + int8 agreement (trained, parity)
    python benchmarks/export_onnx.py --model DIR --agreement-only # int8 vs fp32 agreement of any checkpoint

Speed: a random checkpoint of the full tiny shape (as in engine_throughput.py) exported once (fp32 and int8), then
W1 (1 query x 100 passages), W2 (1 query x 4 documents of ~4,700 tokens) and W3 (the README example, 10 short
documents) scored by the engine (fp32, int8) and by onnxruntime (fp32, int8) with the same tokenization.
onnxruntime gets right-padded batches, longest first, of at most --ort-batch-tokens padded tokens (default 8,192:
its attention holds rows x heads x longest^2 scores, so long documents go alone). W1 and W3 are timed in
interleaved rounds in one process; W2 (gigabytes of attention scores per onnxruntime call) in a fresh process per
implementation, one after the other: a first run, then the median of --w2-repeats runs. The peak memory (VmHWM) of
each implementation and workload is that of a fresh process that loads it and scores the workload. Both run on
--threads threads (default: torch's count).

Agreement: int8 against fp32 per query, onnxruntime's (the export's two graphs: jina_local_rerank.export.int8_agreement)
and the engine's for comparison. First on the docstring reranker (trained in the run by
testing.docstring_task.train_docstring_reranker: a model whose rankings mean something), over its 100 held-out
queries x 20 BM25 candidates, with the held-out NDCG@10 of each; then on the parity checkpoints (random weights)
and any --model, over 10 queries x 50 passages, W1, and the parity golden cases with 3+ documents.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
import workloads  # noqa: E402
from engine_throughput import PARITY_DIR, interleaved_medians  # noqa: E402

from jina_local_rerank import Reranker  # noqa: E402
from jina_local_rerank.evaluation import ranking_agreement  # noqa: E402
from jina_local_rerank.export import OnnxReranker, export_onnx  # noqa: E402
from jina_local_rerank.ranking import best_first  # noqa: E402
from jina_local_rerank.testing.docstring_task import (  # noqa: E402
    held_out_ndcg,
    held_out_queries,
    train_docstring_reranker,
    write_docstring_dataset,
)
from jina_local_rerank.testing.random_checkpoint import TINY_SHAPE, write_random_checkpoint  # noqa: E402
from jina_local_rerank.training.evaluator import EvalQuery  # noqa: E402

IMPLEMENTATIONS = ("engine fp32", "engine int8", "onnxruntime fp32", "onnxruntime int8")

MEASURE_PROCESS = """
import json, statistics, sys, time
implementation, folder, batch_tokens, threads, workload, runs = sys.argv[1:7]
query, documents = json.loads(open(workload).read())
if implementation.startswith("engine"):
    import torch
    from jina_local_rerank import Reranker
    torch.set_num_threads(int(threads))
    scorer = Reranker(folder, device="cpu", dtype=implementation.split()[1])
    score = lambda: scorer.score(query, documents)
else:
    from jina_local_rerank.export import OnnxReranker
    file = "model.onnx" if implementation.endswith("fp32") else "model_quantized.onnx"
    scorer = OnnxReranker(folder, file, threads=int(threads), max_batch_tokens=int(batch_tokens))
    score = lambda: scorer.logits(query, documents)
score()  # the first run allocates what the later ones reuse
times = []
for _ in range(int(runs)):
    start = time.perf_counter()
    score()
    times.append(time.perf_counter() - start)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps({"seconds": statistics.median(times) if times else None, "peak_mb": peak}))
"""


def measure_process(implementation: str, folder: Path, args: argparse.Namespace, workload: Path, runs: int) -> dict:
    """A fresh process that loads ``implementation`` and scores ``workload`` 1 + ``runs`` times: the median seconds
    of the ``runs`` after the first (None for 0), and the process's peak memory (VmHWM, MB)."""
    command = [
        sys.executable,
        "-c",
        MEASURE_PROCESS,
        implementation,
        str(folder),
        str(args.ort_batch_tokens),
        str(torch.get_num_threads()),
        str(workload),
        str(runs),
    ]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def agreement_rankings(golden: dict | None) -> list[tuple[str, list[str]]]:
    """10 queries x 50 passages, W1, and the golden cases' rankings of 3+ documents."""
    pairs = workloads.many_queries(10, 50)
    rankings = [(pairs[i][0], [document for _, document in pairs[i : i + 50]]) for i in range(0, len(pairs), 50)]
    rankings.append(workloads.w1())
    for case in (golden or {}).get("cases", []):
        grouped: dict[str, list[str]] = {}
        for query, document in case["pairs"]:
            if document is not None:
                grouped.setdefault(query, []).append(document)
        rankings += [(query, documents) for query, documents in grouped.items() if len(documents) >= 3]
    return rankings


def print_agreement(models: list[tuple[str, Path, list[EvalQuery] | None]], workdir: Path, golden: dict | None) -> None:
    """int8 against fp32 per (name, model, held-out queries or None): onnxruntime's (the export) and the engine's.

    With held-out queries, the agreement is over their candidates and the table adds each one's NDCG@10."""
    print(
        "\n| int8 vs fp32: model / runtime | rankings | documents | mean Spearman | min Spearman | top-1 same | "
        "top-3 overlap | max abs logit change | largest fp32 logit spread | NDCG@10 fp32 -> int8 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, model, held_out in models:
        rankings = [(q.query, list(q.documents)) for q in held_out] if held_out else agreement_rankings(golden)
        export = export_onnx(model, workdir / f"agreement-{model.name}", quantize="int8").directory
        for runtime in ("onnxruntime", "engine"):
            logits = {}
            for precision in ("fp32", "int8"):  # one at a time: a session keeps the memory of its largest call
                score = scorer(runtime, precision, model, export)
                logits[precision] = [score(query, documents) for query, documents in rankings]
            fp32, int8 = logits["fp32"], logits["int8"]
            a = ranking_agreement(fp32, int8)
            ndcg = (
                " -> ".join(
                    f"{held_out_ndcg(held_out, [best_first(scores) for scores in logits]):.3f}"
                    for logits in (fp32, int8)
                )
                if held_out
                else ""
            )
            print(
                f"| {name} / {runtime} | {a.queries} | {a.documents} | {a.mean_spearman:.3f} | "
                f"{a.min_spearman:.3f} | {a.top1:.0%} | {a.top3:.0%} | {a.max_logit_change:.3f} | "
                f"{a.logit_spread:.3f} | {ndcg} |"
            )


def scorer(runtime: str, precision: str, model: Path, export: Path):
    """``(query, documents) -> raw logits`` of the engine or onnxruntime (``export``) at ``precision``."""
    if runtime == "onnxruntime":
        return OnnxReranker(export, "model.onnx" if precision == "fp32" else "model_quantized.onnx").logits
    reranker = Reranker(model, device="cpu", dtype="float32" if precision == "fp32" else "int8")
    return lambda query, documents: reranker.score(query, documents, raw=True).logits


def print_speed(args: argparse.Namespace, workdir: Path) -> None:
    checkpoint = write_random_checkpoint(workdir / "tiny", TINY_SHAPE, tokenizer_vocab=8000)
    export = export_onnx(checkpoint, workdir / "tiny-onnx", quantize="int8").directory
    threads = torch.get_num_threads()  # --threads, set in main()
    engines = {name: Reranker(checkpoint, device="cpu", dtype=name.split()[1]) for name in IMPLEMENTATIONS[:2]}
    sessions = {
        name: OnnxReranker(
            export,
            "model.onnx" if name.endswith("fp32") else "model_quantized.onnx",
            threads=threads,
            max_batch_tokens=args.ort_batch_tokens,
        )
        for name in IMPLEMENTATIONS[2:]
    }
    tokenizer = engines["engine fp32"].engine.tokenizer
    w1 = workloads.w1()
    tokens_per_word = sum(map(len, tokenizer.tokenize(w1[1]))) / sum(len(d.split()) for d in w1[1])
    workload = {"W1": w1, "W2": workloads.w2(tokens_per_word), "W3": (workloads.SEED_QUERY, workloads.SEED_DOCUMENTS)}

    def runs(query: str, documents: list[str]) -> dict:
        scorers = {name: (lambda e=e: e.score(query, documents)) for name, e in engines.items()}
        scorers.update({name: (lambda s=s: s.logits(query, documents)) for name, s in sessions.items()})
        return scorers

    # W1 and W3 in this process, in interleaved rounds; W2 (gigabytes of attention scores per onnxruntime call) in
    # one fresh process per implementation, one after the other.
    seconds = {
        "W1": interleaved_medians(runs(*workload["W1"]), args.repeats),
        "W3": interleaved_medians(runs(*workload["W3"]), 30),
    }
    print(
        f"\nmodel: full tiny shape, random weights; {threads} threads; onnxruntime calls of <= "
        f"{args.ort_batch_tokens} padded tokens; medians of {args.repeats} (W1) and 30 (W3) interleaved rounds, and "
        f"of {args.w2_repeats} runs (W2) after a first one, in a fresh process per implementation"
    )
    print("\n| workload | implementation | median s | tokens/s | / engine fp32 time | peak MB (fresh process) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (query, documents) in workload.items():
        encoded = tokenizer.encode_pairs([query], [(0, d) for d in documents], max_length=8192, max_query_length=512)
        count = sum(map(len, encoded.input_ids))
        path = workdir / f"{name}.json"
        path.write_text(json.dumps([query, documents]))
        processes = {
            implementation: measure_process(
                implementation,
                checkpoint if implementation.startswith("engine") else export,
                args,
                path,
                args.w2_repeats if name == "W2" else 0,
            )
            for implementation in IMPLEMENTATIONS
        }
        if name == "W2":
            seconds[name] = {implementation: processes[implementation]["seconds"] for implementation in IMPLEMENTATIONS}
        for implementation in IMPLEMENTATIONS:
            value = seconds[name][implementation]
            print(
                f"| {name} ({len(documents)} docs, {count:,} tokens) | {implementation} | {value:.3f} | "
                f"{count / value:.0f} | {value / seconds[name]['engine fp32']:.2f}x | "
                f"{processes[implementation]['peak_mb']:.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=None,
        help="checkpoint(s) for the int8 agreement (default: the docstring reranker and the parity checkpoints)",
    )
    parser.add_argument("--agreement-only", action="store_true", help="skip the speed table")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the W1 runs (medians are reported)")
    parser.add_argument("--w2-repeats", type=int, default=2, help="rounds of the W2 runs")
    parser.add_argument("--ort-batch-tokens", type=int, default=8192, help="padded tokens per onnxruntime call")
    parser.add_argument("--threads", type=int, default=None, help="threads of both runtimes (default: torch's)")
    parser.add_argument("--parity-dir", type=Path, default=PARITY_DIR)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    golden_file = args.parity_dir / "golden.json"
    golden = json.loads(golden_file.read_text()) if golden_file.is_file() else None
    with tempfile.TemporaryDirectory(prefix="jlr-export-bench-") as directory:
        workdir = Path(directory)
        if args.model:
            models = [(model.name, model, None) for model in args.model]
        else:
            _, test = write_docstring_dataset(workdir / "docstring-task")
            trained = train_docstring_reranker(workdir / "docstring-reranker", dataset=workdir / "docstring-task")
            models = [("docstring reranker (trained)", trained.output, held_out_queries(test))]
            models += [(name, args.parity_dir / name, None) for name in ("tiny", "turbo", "heads8") if golden]
        if not args.agreement_only:
            print_speed(args, workdir)
        print_agreement(models, workdir, golden)


if __name__ == "__main__":
    main()
