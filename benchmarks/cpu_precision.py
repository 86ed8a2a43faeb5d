"""The CPU's precisions (fp32, bf16, int8) against the runtimes a CPU user would pick instead, in one run.

    python benchmarks/cpu_precision.py                 # speed table, matmul limits, agreement (trained reranker)
    python benchmarks/cpu_precision.py --quick         # a smoke run of every row at toy sizes (the tests run it)

Speed, on a random checkpoint of the full tiny shape (as in engine_throughput.py), every implementation on
--threads threads (default: torch's):

- the engine in fp32, bf16 and int8;
- OpenVINO on our own ONNX export (``jina_local_rerank.export``, ``attention="whole"``: the layout OpenVINO fuses
  and NNCF quantizes) in fp32 and bf16 (its inference precision hint) and int8 (NNCF post-training quantization,
  calibrated on passages other than W1's), in length-sorted padded batches of 32;
- sentence-transformers' CrossEncoder with ``backend="onnx"`` and ``backend="openvino"`` (default precision: bf16
  on CPUs with AVX512_BF16 or AMX) on a random BERT of the same cost per token (6 x 384, intermediate 1,280; see
  ``engine_throughput.flop_matched_intermediate``).

W1 (1 query x 100 passages) runs in interleaved rounds with a 2,048-square matmul in each precision (fp32 and bf16
``a @ b``, int8 ``torch._int_mm``), so "% of limit" divides each row's model FLOPs per second by the rate of its
own precision measured in the same rounds. W3 (the model card's example through ``rerank``; the peers tokenize and
score the same ten pairs) takes 30 interleaved rounds. W2 (1 query x 4 documents of ~4,700 tokens) runs the engine's
modes, with the peak memory of a fresh process per mode.

Agreement: bf16 and int8 against fp32 on the docstring reranker (``testing.docstring_task``, trained in the run: a
model whose rankings mean something), over its held-out queries x BM25 candidates, with each mode's held-out
NDCG@10; and batch-mate independence (each pair alone against the same pair among W1's, on the tiny shape).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import workloads  # noqa: E402
from engine_throughput import (  # noqa: E402
    flop_matched_intermediate,
    interleaved_medians,
    measure_process,
    pair_flops,
    sentence_transformers_baseline,
)

from jina_local_rerank import Reranker  # noqa: E402
from jina_local_rerank.checkpoint.files import read_config  # noqa: E402
from jina_local_rerank.engine.tokenization import PairTokenizer  # noqa: E402
from jina_local_rerank.evaluation import ranking_agreement  # noqa: E402
from jina_local_rerank.export import export_onnx  # noqa: E402
from jina_local_rerank.export.layout import MODEL_FILE, ONNX_FOLDER  # noqa: E402
from jina_local_rerank.model.config import JinaBertConfig  # noqa: E402
from jina_local_rerank.model.cpu_kernels import bf16_path, cpu_features  # noqa: E402
from jina_local_rerank.model.quantization import int8_path  # noqa: E402
from jina_local_rerank.ranking import best_first  # noqa: E402
from jina_local_rerank.testing.random_checkpoint import TINY_SHAPE, CheckpointShape, write_random_checkpoint  # noqa: E402

MODES = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}
PEER_BATCH = 32
# The goals: W1 tokens/s against engine fp32, against the best OpenVINO of the same precision, against
# CrossEncoder with backend="openvino"; W3 ms in the fastest mode; W2 time against fp32.
GOALS = {"bf16": 2.2, "int8": 3.0, "openvino": 1.4, "crossencoder": 2.5, "w3_ms": 15.0, "w2": 2.0}


class OpenVinoScorer:
    """Raw logits of (query, document) pairs from our ONNX export through OpenVINO: the engine's tokenization,
    length-sorted right-padded batches of ``PEER_BATCH``. ``precision`` fp32/bf16 sets OpenVINO's inference precision;
    int8 quantizes the graph with NNCF first (``calibration``: (query, documents) rankings), other ops at its
    default."""

    def __init__(self, folder: Path, precision: str, threads: int, calibration: list[tuple[str, list[str]]]) -> None:
        import openvino as ov

        config = read_config(folder / "config.json")
        self.tokenizer = PairTokenizer.from_directory(folder, config.vocab_size)
        core = ov.Core()
        model = core.read_model(str(folder / ONNX_FOLDER / MODEL_FILE))
        if precision == "int8":
            import nncf

            items = [self._inputs(ids) for q, d in calibration for ids in self._batches(q, d)]
            model = nncf.quantize(
                model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
            )
        settings = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision != "int8":
            settings["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
        self.compiled = core.compile_model(model, "CPU", settings)

    def _batches(self, query: str, documents: list[str]) -> list[list[list[int]]]:
        encoded = self.tokenizer.encode_pairs(
            [query], [(0, d) for d in documents], max_length=8192, max_query_length=512
        )
        ordered = sorted(encoded.input_ids, key=len, reverse=True)
        return [ordered[i : i + PEER_BATCH] for i in range(0, len(ordered), PEER_BATCH)]

    def _inputs(self, rows: list[list[int]]) -> dict[str, np.ndarray]:
        longest = len(rows[0])
        ids = np.full((len(rows), longest), self.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for r, row in enumerate(rows):
            ids[r, : len(row)], mask[r, : len(row)] = row, 1
        return {"input_ids": ids, "attention_mask": mask}

    def score(self, query: str, documents: list[str]) -> list[float]:
        """Logits in length order (the benchmark needs the work, not the order)."""
        return [
            float(x)
            for rows in self._batches(query, documents)
            for x in self.compiled(self._inputs(rows))[0].reshape(-1)
        ]


def matmul_runs(n: int) -> tuple[dict[str, callable], float]:
    """A square ``n`` matmul per precision (4 of them per call), and the operations of one call."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ab, bb = a.bfloat16(), b.bfloat16()
    ai, bi = torch.randint(-127, 128, (n, n), dtype=torch.int8), torch.randint(-127, 128, (n, n), dtype=torch.int8)
    runs = {
        "matmul fp32": lambda: [a @ b for _ in range(4)],
        "matmul bf16": lambda: [ab @ bb for _ in range(4)],
        "matmul int8": lambda: [torch._int_mm(ai, bi) for _ in range(4)],
    }
    return runs, 4 * 2 * n**3


def cross_encoders(checkpoint: Path, workdir: Path, config: JinaBertConfig, quick: bool) -> dict[str, object]:
    """CrossEncoder with the onnx and openvino backends on a BERT of our cost per token (where installed)."""
    layers = 6
    intermediate = max(16, flop_matched_intermediate(config, layers))  # the toy shape of --quick has no match
    if sentence_transformers_baseline(checkpoint, workdir, layers=layers, intermediate_size=intermediate) is None:
        return {}
    from sentence_transformers import CrossEncoder

    directory = workdir / f"bert-{layers}x{config.hidden_size}x{intermediate}"
    models = {}
    for backend in ("onnx", "openvino"):
        try:
            models[f"CrossEncoder backend={backend}"] = CrossEncoder(
                str(directory), backend=backend, max_length=1024 if not quick else 128
            )
        except Exception as error:  # noqa: BLE001 (a backend's extra missing: its row is left out, said why)
            print(f"CrossEncoder backend={backend} left out: {str(error).splitlines()[0]}")
    return models


def agreement_rows(workdir: Path, quick: bool) -> list[dict]:
    """bf16 and int8 against fp32 on the trained docstring reranker's held-out rankings."""
    from jina_local_rerank.testing.docstring_task import (
        DOCSTRING_SHAPE,
        held_out_ndcg,
        held_out_queries,
        train_docstring_reranker,
        write_docstring_dataset,
    )

    _, test = write_docstring_dataset(workdir / "docstring-task")
    if quick:  # the same rows on untrained weights of the same shape
        trained = write_random_checkpoint(workdir / "docstring-random", DOCSTRING_SHAPE)
    else:
        trained = train_docstring_reranker(workdir / "docstring-reranker", dataset=workdir / "docstring-task").output
    queries = held_out_queries(test)
    logits = {}
    for name, dtype in MODES.items():
        reranker = Reranker(trained, device="cpu", dtype=dtype)
        logits[name] = [reranker.score(q.query, list(q.documents), raw=True).logits for q in queries]
    rows = []
    for name in MODES:
        a = ranking_agreement(logits["fp32"], logits[name])
        ndcg = held_out_ndcg(queries, [best_first(scores) for scores in logits[name]])
        rows.append(
            {
                "mode": name,
                "queries": a.queries,
                "documents": a.documents,
                "ndcg": ndcg,
                "mean_spearman": a.mean_spearman,
                "min_spearman": a.min_spearman,
                "top1": a.top1,
                "top3": a.top3,
                "max_change": a.max_logit_change,
                "spread": a.logit_spread,
            }
        )
    return rows


def batch_mate_change(checkpoint: Path, w1: tuple[str, list[str]], count: int) -> dict[str, float]:
    """Per mode, the largest |logit alone - logit among W1's 100| over W1's first ``count`` passages."""
    changes = {}
    for name, dtype in MODES.items():
        reranker = Reranker(checkpoint, device="cpu", dtype=dtype)
        among = reranker.score(*w1, raw=True).logits
        alone = [reranker.score(w1[0], [d], raw=True).logits[0] for d in w1[1][:count]]
        changes[name] = max(abs(a - b) for a, b in zip(alone, among))
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the W1 runs (medians are reported)")
    parser.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="toy sizes: every row runs, the numbers mean nothing")
    parser.add_argument("--no-agreement", action="store_true", help="skip training the docstring reranker")
    parser.add_argument("--json", default=None, help="also write every number as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="jlr-cpu-precision-") as directory:
        run(args, Path(directory))


def run(args: argparse.Namespace, workdir: Path) -> None:
    threads = torch.get_num_threads()
    shape = CheckpointShape(2, 64, 4, 128, vocab_size=8000) if args.quick else TINY_SHAPE
    checkpoint = write_random_checkpoint(workdir / "tiny", shape, tokenizer_vocab=8000)
    engines = {name: Reranker(checkpoint, device="cpu", dtype=dtype) for name, dtype in MODES.items()}
    config = engines["fp32"].engine.model.config
    tokenizer = engines["fp32"].engine.tokenizer
    w1 = workloads.w1()
    if args.quick:
        w1 = (w1[0], w1[1][:8])
    w3 = (workloads.SEED_QUERY, workloads.SEED_DOCUMENTS)
    tokens_per_word = sum(map(len, tokenizer.tokenize(w1[1]))) / sum(len(d.split()) for d in w1[1])
    w2 = workloads.w2(tokens_per_word, tokens=600 if args.quick else 4700, count=2 if args.quick else 4)

    # The export an OpenVINO user writes: whole attention, the pattern OpenVINO fuses and NNCF quantizes (the default
    # blocked layout's Loop is for bounded memory in transformers.js; NNCF cannot walk it).
    export = export_onnx(checkpoint, workdir / "onnx", attention="whole").directory
    calibration = [
        (q, [d for _, d in workloads.many_queries(4, 25)[i * 25 : (i + 1) * 25]])
        for i, q in enumerate(workloads.queries(4, seed=5))
    ][: 1 if args.quick else 4]
    peers: dict[str, object] = {}
    for precision in MODES:
        missing = [m for m in ("openvino", "nncf")[: 2 if precision == "int8" else 1] if not find_spec(m)]
        if missing:  # its row is left out, said why (as for CrossEncoder's backends)
            print(f"OpenVINO {precision} left out: {' and '.join(missing)} not installed (the bench extra)")
            continue
        try:
            peers[f"OpenVINO {precision} (our export)"] = OpenVinoScorer(export, precision, threads, calibration)
        except Exception as error:  # noqa: BLE001 (a row that cannot run is left out, said why)
            print(f"OpenVINO {precision} left out: {type(error).__name__}: {str(error).splitlines()[0]}")
    crosses = cross_encoders(checkpoint, workdir, config, args.quick)
    precision_of = {f"engine {m}": m for m in MODES} | {f"OpenVINO {m} (our export)": m for m in MODES}
    default_ov = "bf16" if cpu_features()["avx512_bf16"] or cpu_features()["amx_bf16"] else "fp32"
    precision_of |= {"CrossEncoder backend=onnx": "fp32", "CrossEncoder backend=openvino": default_ov}

    def runs(query: str, documents: list[str], end_to_end: bool) -> dict[str, callable]:
        out = {
            f"engine {m}": (lambda e=e: e.rerank(query, documents) if end_to_end else e.score(query, documents))
            for m, e in engines.items()
        }
        out |= {name: (lambda p=p: p.score(query, documents)) for name, p in peers.items()}
        pairs = [[query, d] for d in documents]
        out |= {
            name: (lambda c=c: c.predict(pairs, batch_size=PEER_BATCH, show_progress_bar=False))
            for name, c in crosses.items()
        }
        return out

    matmuls, matmul_ops = matmul_runs(256 if args.quick else 2048)
    w1_seconds = interleaved_medians(matmuls | runs(*w1, end_to_end=False), 1 if args.quick else args.repeats)
    limits = {m: matmul_ops / w1_seconds.pop(f"matmul {m}") / 1e9 for m in MODES}
    w3_seconds = interleaved_medians(runs(*w3, end_to_end=True), 3 if args.quick else 30)
    w2_seconds = interleaved_medians({m: (lambda e=e: e.score(*w2)) for m, e in engines.items()}, 1)
    w2_file = workdir / "w2.json"
    w2_file.write_text(json.dumps(w2))
    w2_peak = {m: measure_process(checkpoint, "cpu", dtype, w2_file)["peak_mb"] for m, dtype in MODES.items()}

    def tokens_and_flops(query: str, documents: list[str]) -> tuple[int, float]:
        lengths = [
            len(ids)
            for ids in tokenizer.encode_pairs(
                [query], [(0, d) for d in documents], max_length=8192, max_query_length=512
            ).input_ids
        ]
        return sum(lengths), sum(pair_flops(config, n) for n in lengths)

    w1_tokens, w1_flops = tokens_and_flops(*w1)
    w3_tokens, _ = tokens_and_flops(*w3)
    w2_tokens, w2_flops = tokens_and_flops(*w2)
    features = cpu_features()
    print(
        f"\nmachine: {threads} threads; {features['architecture']}, "
        + ", ".join(name.upper() for name, value in features.items() if value is True)
    )
    print(f"engine bf16: {bf16_path()}; engine int8: {int8_path()}")
    print(
        f"matmul limits (2,048-square, median over the W1 rounds): fp32 {limits['fp32']:.0f} GFLOP/s, "
        f"bf16 {limits['bf16']:.0f} GFLOP/s ({limits['bf16'] / limits['fp32']:.1f}x), int8 {limits['int8']:.0f} "
        f"GOP/s ({limits['int8'] / limits['fp32']:.1f}x)"
    )
    print(
        f"model: {'toy' if args.quick else 'full tiny'} shape, random weights; W1 {w1_tokens:,} tokens, W3 "
        f"{w3_tokens} tokens, W2 {w2_tokens:,} tokens\n"
    )
    print("| implementation | precision | W1 tokens/s | W1 x engine fp32 | W1 model GFLOP/s | % of its limit | W3 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = w1_seconds["engine fp32"]
    for name, seconds in w1_seconds.items():
        precision = precision_of[name]
        rate = w1_flops / seconds / 1e9
        print(
            f"| {name} | {precision} | {w1_tokens / seconds:,.0f} | {base / seconds:.2f} | {rate:.0f} | "
            f"{100 * rate / limits[precision]:.0f}% | {1e3 * w3_seconds[name]:.1f} |"
        )
    print("\n| W2 (engine) | median s | tokens/s | x fp32 | % of its limit | peak MB (fresh process) |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, seconds in w2_seconds.items():
        rate = w2_flops / seconds / 1e9
        print(
            f"| {mode} | {seconds:.2f} | {w2_tokens / seconds:,.0f} | {w2_seconds['fp32'] / seconds:.2f} | "
            f"{100 * rate / limits[mode]:.0f}% | {w2_peak[mode]:.0f} |"
        )

    goals = []
    for mode in ("bf16", "int8"):
        engine = w1_seconds[f"engine {mode}"]
        goals.append((f"W1 engine {mode} / engine fp32", base / engine, GOALS[mode]))
        if f"OpenVINO {mode} (our export)" in w1_seconds:
            goals.append(
                (
                    f"W1 engine {mode} / OpenVINO {mode}",
                    w1_seconds[f"OpenVINO {mode} (our export)"] / engine,
                    GOALS["openvino"],
                )
            )
        if "CrossEncoder backend=openvino" in w1_seconds:
            goals.append(
                (
                    f"W1 engine {mode} / CrossEncoder openvino",
                    w1_seconds["CrossEncoder backend=openvino"] / engine,
                    GOALS["crossencoder"],
                )
            )
        goals.append(
            (
                f"W2 engine {mode} / fp32 (peak {w2_peak[mode]:.0f} vs {w2_peak['fp32']:.0f} MB)",
                w2_seconds["fp32"] / w2_seconds[mode],
                GOALS["w2"],
            )
        )
    fastest = min((f"engine {m}" for m in MODES), key=w3_seconds.get)
    print("\n| goal (same run) | measured | goal | met |")
    print("|---|---:|---:|---|")
    for label, value, goal in goals:
        print(f"| {label} | {value:.2f}x | >= {goal}x | {'yes' if value >= goal else 'no'} |")
    w3_ms = 1e3 * w3_seconds[fastest]
    ov_int8_ms = 1e3 * w3_seconds.get("OpenVINO int8 (our export)", float("nan"))
    met = w3_ms <= GOALS["w3_ms"] and w3_ms < ov_int8_ms  # False without the OpenVINO row
    print(
        f"| W3 {fastest} (fastest mode), OpenVINO int8 {ov_int8_ms:.1f} ms | {w3_ms:.1f} ms | <= "
        f"{GOALS['w3_ms']:.0f} ms, < OpenVINO int8 | {'yes' if met else 'no'} |"
    )

    changes = batch_mate_change(checkpoint, w1, 4 if args.quick else 20)
    print("\n| batch-mates: largest |alone - among W1's| logit, first 20 W1 passages | " + " | ".join(MODES) + " |")
    print("|---|" + "---:|" * len(MODES))
    print("| tiny shape, random weights | " + " | ".join(f"{changes[m]:.1e}" for m in MODES) + " |")
    agreement = [] if args.no_agreement else agreement_rows(workdir, args.quick)
    if agreement:
        print(
            "\n| docstring reranker, held-out | queries | documents | NDCG@10 | mean Spearman vs fp32 | "
            "min Spearman | top-1 same | top-3 overlap | max abs logit change | fp32 logit spread |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for a in agreement:
            print(
                f"| {a['mode']} | {a['queries']} | {a['documents']} | {a['ndcg']:.3f} | {a['mean_spearman']:.4f} | "
                f"{a['min_spearman']:.3f} | {a['top1']:.0%} | {a['top3']:.0%} | {a['max_change']:.3f} | "
                f"{a['spread']:.2f} |"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "limits": limits,
                    "w1_seconds": w1_seconds,
                    "w3_seconds": w3_seconds,
                    "w2_seconds": w2_seconds,
                    "w2_peak_mb": w2_peak,
                    "batch_mate_change": changes,
                    "agreement": agreement,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
