"""GPU benchmark: the engine's flex path and its old padded path against sentence-transformers' CrossEncoder.

    python benchmarks/gpu.py                        # one CUDA GPU, bf16: the table (meant to take under 8 minutes)
    python benchmarks/gpu.py --device cpu --quick   # every row at toy sizes on CPU, in seconds (the tests run it)

Needs only what the engine needs (torch, tokenizers, safetensors, numpy, tqdm) plus transformers and
sentence-transformers for the baseline, and no network: it writes its own random-weight checkpoints, the full
tiny shape (``random_checkpoint.TINY_SHAPE``) for the engine and a native BERT for CrossEncoder with 6 layers of
hidden 384 and 12 heads, whose intermediate size (1,280) gives it the engine's dense FLOPs per token
(``engine_throughput.flop_matched_intermediate`` explains the arithmetic).

Workloads (``workloads.py``): W1 100 queries x 100 passages of 24-360 words; W2 1 query x 4 documents of about
4,700 tokens; W3 the README example end to end (latency); W8K 64 pairs of 8,192 tokens in one forward pass.
Implementations: the engine with FlexAttention (CUDA's default), with the old padded path
(``engine.attention = PaddedAttention``), and CrossEncoder in bf16 with SDPA at batch sizes 32 and 128. Model
FLOPs follow engine_throughput's formula for each model (BERT's MLP has 2 matrices to GEGLU's 3), and the %
column divides them by a bf16 matmul timed in the same run. Compile caches start empty, so the compile row
(``engine.warm_up``: one kernel per bucket of packed tokens) is the cold cost; first calls after it are reported
apart from the medians. With the golden parity folder, the flex path's logits are checked against it in fp32
and bf16 (next to the exact-length CPU path in bf16, same run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).parent), str(REPO_ROOT / "core")]  # runs from a plain checkout, not installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import workloads  # noqa: E402
from engine_throughput import (  # noqa: E402
    PARITY_DIR,
    cross_encoder_transformer,
    flop_matched_intermediate,
    interleaved_medians,
    matmul_run,
    pair_flops,
    sentence_transformers_baseline,
)

from jina_local_rerank import Reranker  # noqa: E402
from jina_local_rerank.model.attention import (  # noqa: E402
    ExactLengthAttention,
    FlexAttention,
    PackedAttention,
    PaddedAttention,
    flex_bucket,
)
from jina_local_rerank.testing.random_checkpoint import TINY_SHAPE, CheckpointShape, write_random_checkpoint  # noqa: E402

BERT_LAYERS = 6
# The targets on the H200.
TARGET_W1_RATIO = 3.0
TARGET_TOKENS_PER_S = 2e6
TARGET_W3_MS = 5.0


class Sizes:
    """Workload sizes: the issue's, or toy ones for ``--quick``."""

    def __init__(self, quick: bool) -> None:
        self.shape = CheckpointShape(2, 96, 3, 192, max_position_embeddings=1024) if quick else TINY_SHAPE
        self.tokenizer_vocab = 2000 if quick else 8000
        self.bert_layers = 3 if quick else BERT_LAYERS
        self.w1 = (2, 2) if quick else (100, 100)  # queries, passages per query
        self.w2 = (300, 2) if quick else (4700, 4)  # tokens, documents
        self.window = (512, 4) if quick else (8192, 64)  # tokens, pairs
        self.matmul = 256 if quick else None
        self.repeats = 1 if quick else 3
        self.w2_repeats = 1 if quick else 5
        self.w3_repeats = 1 if quick else 30


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_of(run: Callable[[], object], device: str) -> float:
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def peak_memory_mib(run: Callable[[], object], device: str) -> float | None:
    """Peak GPU memory allocated during ``run`` (MiB); None on CPU, without running it."""
    if not device.startswith("cuda"):
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats()
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated() / 2**20


@contextmanager
def attention_mode(reranker: Reranker, mode: type[PackedAttention]) -> Iterator[None]:
    engine = reranker.engine
    previous, engine.attention = engine.attention, mode
    try:
        yield
    finally:
        engine.attention = previous


class Table:
    """Rows of measurements; a failing measurement becomes a row saying so, and the run goes on."""

    def __init__(self, device: str, peak_tflops: float) -> None:
        self.device = device
        self.peak_tflops = peak_tflops
        self.rows: list[dict] = []
        self.notes: list[tuple[str, str]] = []

    def attempt(self, label: str, measure: Callable[[], object]) -> object:
        try:
            return measure()
        except Exception as error:  # noqa: BLE001 (an OOM or a compile failure must not lose the other rows)
            traceback.print_exc(file=sys.stderr)
            self.rows.append({"workload": label, "impl": "", "failed": f"{type(error).__name__}: {error}"[:300]})
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            return None

    def add(self, workload: str, impl: str, seconds: float, tokens: int, flops: float, peak_mib: float | None) -> dict:
        row = {
            "workload": workload,
            "impl": impl,
            "seconds": seconds,
            "tokens": tokens,
            "tokens/s": tokens / seconds,
            "TFLOP/s": flops / seconds / 1e12,
            "% of matmul": 100 * flops / seconds / 1e12 / self.peak_tflops,
            "peak MiB": peak_mib,
        }
        self.rows.append(row)
        return row


def pair_lengths(reranker: Reranker, pairs: list[list[str]]) -> list[int]:
    """Token count of each pair as the engine encodes it (truncated to the window)."""
    return [len(ids) for ids in encode(reranker, pairs)]


def encode(reranker: Reranker, pairs: list[list[str]]) -> list[list[int]]:
    queries = list(dict.fromkeys(q for q, _ in pairs))
    index = {q: i for i, q in enumerate(queries)}
    return reranker.engine.tokenizer.encode_pairs(
        queries,
        [(index[q], d) for q, d in pairs],
        max_length=reranker.max_length,
        max_query_length=reranker.max_query_length,
    ).input_ids


def golden_errors(
    parity_dir: Path, device: str, dtype: str, mode: type[PackedAttention] | None, names: tuple[str, ...] | None = None
) -> tuple[str, dict[str, float]]:
    """The mode's name and the worst |logit - golden logit| per parity checkpoint (``names``, default all) over
    every golden case, each case one forward pass through ``mode`` (None: the engine's default on ``device``)."""
    golden = json.loads((parity_dir / "golden.json").read_text())
    worst = {}
    for name in names or sorted(golden["results"]):
        engine = Reranker(parity_dir / name, device=device, dtype=dtype).engine
        model, mode_used = engine.model, mode or engine.attention
        errors = []
        for case in golden["cases"]:
            expected = golden["results"][name][case["name"]]
            lengths = expected["seq_lens"]
            ids = [t for row, n in zip(expected["input_ids"], lengths) for t in row[:n]]
            with torch.inference_mode():
                logits = model(torch.tensor(ids, device=engine.device), mode_used(lengths, model.alibi_slopes))
            errors.append((logits.cpu() - torch.tensor(expected["logits"])).abs().max().item())
        worst[name] = max(errors)
    return mode_used.__name__, worst


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, workdir: Path) -> dict:
    device, dtype = args.device, args.dtype
    sizes = Sizes(args.quick)
    # Cold compile: fresh inductor and Triton caches, so the compile row is what a new machine pays.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(workdir / "inductor-cache")
    os.environ["TRITON_CACHE_DIR"] = str(workdir / "triton-cache")

    log("writing the random checkpoints")
    checkpoint = write_random_checkpoint(workdir / "jina", sizes.shape, tokenizer_vocab=sizes.tokenizer_vocab)
    torch_dtype = getattr(torch, dtype)
    matmul, matmul_flops = matmul_run(device, torch_dtype, sizes.matmul)
    peak = matmul_flops / interleaved_medians({"matmul": matmul}, 5)["matmul"] / 1e12
    table = Table(device, peak)
    parity: dict[str, dict[str, float]] = {}
    result = {
        "machine": machine(device, dtype, peak),
        "rows": table.rows,
        "notes": table.notes,
        "parity": parity,
        "max_batch_tokens": args.max_batch_tokens,
    }

    def save() -> None:
        """Write what is measured so far (``--json``), so a run cut short still leaves its rows."""
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))

    start = time.perf_counter()
    reranker = Reranker(checkpoint, device=device, dtype=dtype, max_batch_tokens=args.max_batch_tokens)
    table.notes.append(("load to a ready engine (s)", f"{time.perf_counter() - start:.2f}"))
    engine = reranker.engine
    config = engine.model.config
    default_mode = engine.attention.__name__
    engine.attention = FlexAttention  # the CUDA default where flex_available(); on CPU set here to run the same path
    table.notes.append(("engine attention default on this device", default_mode))

    bert_intermediate = flop_matched_intermediate(config, sizes.bert_layers)
    cross_encoder = table.attempt(
        "CrossEncoder load",
        lambda: sentence_transformers_baseline(
            checkpoint,
            workdir,
            device=device,
            dtype=torch_dtype,
            layers=sizes.bert_layers,
            intermediate_size=bert_intermediate,
            max_length=config.max_position_embeddings,
        ),
    )
    bert_config = cross_encoder_transformer(cross_encoder).config if cross_encoder is not None else None
    bert_attention = getattr(bert_config, "_attn_implementation", "unknown attention")
    if bert_config is not None:
        table.notes.append(
            (
                "CrossEncoder model",
                f"BERT {bert_config.num_hidden_layers} x {bert_config.hidden_size}, "
                f"intermediate {bert_config.intermediate_size}, attention {bert_attention}, {dtype}",
            )
        )

    log(f"warm-up: compiling buckets up to {args.max_batch_tokens} tokens")
    warm_up = FlexAttention.warm_up_batches(args.max_batch_tokens, reranker.max_length)
    buckets = sorted({flex_bucket(sum(lengths)) for lengths in warm_up})
    compile_s = table.attempt("compile", lambda: seconds_of(lambda: engine.warm_up(args.max_batch_tokens), device))
    if compile_s is not None:
        table.notes.append(
            (
                f"compile: engine.warm_up({args.max_batch_tokens}), {len(buckets)} buckets "
                f"{buckets[0]:,}-{buckets[-1]:,} tokens (s)",
                f"{compile_s:.1f}",
            )
        )

    seed = (workloads.SEED_QUERY, workloads.SEED_DOCUMENTS)
    seed_pairs = [[seed[0], d] for d in seed[1]]
    first_seed = table.attempt("W3 first call", lambda: seconds_of(lambda: reranker.rerank(*seed), device))
    if first_seed is not None:
        table.notes.append(("first W3 call after warm-up (ms)", f"{first_seed * 1e3:.1f}"))

    def measure(
        workload: str,
        pairs: list[list[str]],
        runs: dict[str, Callable[[], object]],
        repeats: int,
        target: Reranker = reranker,
    ) -> None:
        """Median seconds of each run (interleaved rounds), then its peak memory in one more run; the token
        counts are ``target``'s encoding of ``pairs``."""
        lengths = pair_lengths(target, pairs)
        medians = table.attempt(workload, lambda: interleaved_medians(runs, repeats))
        for impl, seconds in (medians or {}).items():
            is_bert = impl.startswith("CrossEncoder")
            flops = sum(pair_flops(bert_config, n, 2) if is_bert else pair_flops(config, n) for n in lengths)
            peak_mib = table.attempt(f"{workload} {impl} memory", lambda impl=impl: peak_memory_mib(runs[impl], device))
            table.add(workload, impl, seconds, sum(lengths), flops, peak_mib)

    def engine_runs(pairs: list[list[str]], target: Reranker, pre_tokenized: bool) -> dict[str, Callable[[], object]]:
        runs: dict[str, Callable[[], object]] = {}
        runs["engine flex, score_pairs (tokenization included)"] = lambda: target.score_pairs(pairs, raw=True)
        if pre_tokenized:
            sequences = encode(target, pairs)
            runs["engine flex, pre-tokenized (engine.logits)"] = lambda: engine.logits(
                sequences, target.max_batch_tokens
            )
        runs["engine padded (old path), score_pairs"] = lambda: padded(target, lambda: target.score_pairs(pairs))
        return runs

    def cross_encoder_runs(pairs: list[list[str]], batch_sizes: tuple[int, ...]) -> dict[str, Callable[[], object]]:
        if cross_encoder is None:
            return {}
        return {
            f"CrossEncoder {dtype} {bert_attention}, batch {b}": (
                lambda b=b: cross_encoder.predict(pairs, batch_size=b, show_progress_bar=False, convert_to_tensor=True)
            )
            for b in batch_sizes
        }

    log("W1")
    w1 = workloads.many_queries(*sizes.w1)
    measure(
        f"W1 ({sizes.w1[0]} queries x {sizes.w1[1]} passages)",
        w1,
        {**engine_runs(w1, reranker, True), **cross_encoder_runs(w1, (32, 128))},
        sizes.repeats,
    )
    agreement = table.attempt("W1 flex vs padded", lambda: flex_padded_agreement(reranker, w1))
    if agreement is not None:
        table.notes.append(("W1: max |flex logit - padded logit|", f"{agreement:.2e}"))

    save()
    log("W2")
    passages = [p for _, p in w1[:100]]
    tokens_per_word = sum(map(len, engine.tokenizer.tokenize(passages))) / sum(len(p.split()) for p in passages)
    w2_query, w2_documents = workloads.w2(tokens_per_word, *sizes.w2)
    w2 = [[w2_query, d] for d in w2_documents]
    measure(
        f"W2 ({sizes.w2[1]} documents of ~{sizes.w2[0]:,} tokens)",
        w2,
        {**engine_runs(w2, reranker, False), **cross_encoder_runs(w2, (4,))},
        sizes.w2_repeats,
    )

    save()
    log("W3")
    w3_runs = {
        "engine flex, rerank (end to end)": lambda: reranker.rerank(*seed),
        "engine padded (old path), rerank": lambda: padded(reranker, lambda: reranker.rerank(*seed)),
        **cross_encoder_runs(seed_pairs, (32,)),
    }
    measure("W3 (README example, latency)", seed_pairs, w3_runs, sizes.w3_repeats)

    save()
    log("W8K")
    window, count = sizes.window
    window_reranker = Reranker(
        checkpoint, device=device, dtype=dtype, max_length=window, max_batch_tokens=window * count
    )
    window_query, window_documents = workloads.w2(tokens_per_word, round(1.2 * window), count)
    w8k = [[window_query, d] for d in window_documents]
    first = table.attempt("W8K first call", lambda: seconds_of(lambda: window_reranker.score_pairs(w8k), device))
    if first is not None:
        table.notes.append(
            (f"W8K first call, compiling the {flex_bucket(window * count):,}-token bucket (s)", f"{first:.1f}")
        )
    w8k_runs = {
        "engine flex, one pass": lambda: window_reranker.score_pairs(w8k, raw=True),
        "engine padded (old path)": lambda: padded(window_reranker, lambda: window_reranker.score_pairs(w8k)),
        **cross_encoder_runs(w8k, (8,)),
    }
    measure(f"W8K ({count} pairs of {window:,} tokens)", w8k, w8k_runs, 1, window_reranker)

    save()
    if not args.skip_parity and (args.parity_dir / "golden.json").is_file():
        log("parity")
        for label, (parity_device, parity_dtype, mode) in {
            "CPU bf16, exact-length (reference tolerance)": ("cpu", "bfloat16", ExactLengthAttention),
            f"{device} fp32, default mode": (device, "float32", None),
            f"{device} bf16, default mode": (device, "bfloat16", None),
        }.items():
            errors = table.attempt(
                f"parity {label}",
                lambda run=(parity_device, parity_dtype, mode): golden_errors(args.parity_dir, *run),
            )
            if errors is not None:
                parity[f"{label}: {errors[0]}"] = errors[1]
    else:
        table.notes.append(("golden parity", f"skipped: no {args.parity_dir / 'golden.json'}"))

    save()
    return result


def padded(reranker: Reranker, call: Callable[[], object]) -> object:
    """``call()`` with the engine on the old padded path."""
    with attention_mode(reranker, PaddedAttention):
        return call()


def flex_padded_agreement(reranker: Reranker, pairs: list[list[str]]) -> float:
    flex = reranker.score_pairs(pairs, raw=True).logits
    with attention_mode(reranker, PaddedAttention):
        padded = reranker.score_pairs(pairs, raw=True).logits
    return max(abs(a - b) for a, b in zip(flex, padded))


def machine(device: str, dtype: str, peak: float) -> dict:
    info = {"device": device, "dtype": dtype, "torch": torch.__version__, "matmul TFLOP/s": peak}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    for package in ("transformers", "sentence_transformers"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = "not installed"
    return info


def print_report(result: dict) -> None:
    m = result["machine"]
    print(
        f"\nmachine: {m.get('gpu', m['device'])}; torch {m['torch']}, transformers {m['transformers']}, "
        f"sentence-transformers {m['sentence_transformers']}; {m['dtype']}; measured matmul rate "
        f"{m['matmul TFLOP/s']:.1f} TFLOP/s (the % column's reference); engine budget "
        f"{result['max_batch_tokens']:,} packed tokens per pass\n"
    )
    print("| workload | implementation | median ms | tokens/s | model TFLOP/s | % of matmul | peak GPU MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        if "failed" in r:
            print(f"| {r['workload']} | {r['impl']} | failed: {r['failed']} | | | | |")
            continue
        peak = "n/a" if r["peak MiB"] is None else f"{r['peak MiB']:,.0f}"
        print(
            f"| {r['workload']} | {r['impl']} | {r['seconds'] * 1e3:,.1f} | {r['tokens/s']:,.0f} | "
            f"{r['TFLOP/s']:.2f} | {r['% of matmul']:.1f}% | {peak} |"
        )
    print("\n| measurement | value |")
    print("|---|---:|")
    for name, value in result["notes"]:
        print(f"| {name} | {value} |")
    rows = result["rows"]
    print("\n| ratio and target | value | target | met |")
    print("|---|---:|---:|---|")
    for line in targets(rows):
        print(line)
    if result["parity"]:
        names = sorted({name for worst in result["parity"].values() for name in worst})
        print("\n| golden parity: max abs logit error over the cases | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for label, worst in result["parity"].items():
            print(f"| {label} | " + " | ".join(f"{worst[n]:.2e}" if n in worst else "" for n in names) + " |")


def targets(rows: list[dict]) -> list[str]:
    def best(workload: str, prefix: str) -> dict | None:
        found = [
            r for r in rows if r["workload"].startswith(workload) and r["impl"].startswith(prefix) and "seconds" in r
        ]
        return max(found, key=lambda r: r["tokens/s"]) if found else None

    lines = []
    flex, pre, padded = (best("W1", p) for p in ("engine flex, score", "engine flex, pre", "engine padded"))
    cross = best("W1", "CrossEncoder")
    if flex and cross:
        ratio = flex["tokens/s"] / cross["tokens/s"]
        lines.append(
            f"| W1 engine flex / best CrossEncoder (end to end, same run) | {ratio:.2f}x | "
            f">= {TARGET_W1_RATIO:.0f}x | {'yes' if ratio >= TARGET_W1_RATIO else 'no'} |"
        )
    if flex and padded:
        ratio = flex["tokens/s"] / padded["tokens/s"]
        lines.append(f"| W1 engine flex / old padded path (same run) | {ratio:.2f}x | | |")
    for row in (flex, pre):
        if row:
            met = "yes" if row["tokens/s"] >= TARGET_TOKENS_PER_S else "no"
            lines.append(f"| W1 tokens/s, {row['impl']} | {row['tokens/s']:,.0f} | >= 2,000,000 | {met} |")
    w2_flex, w2_cross = best("W2", "engine flex"), best("W2", "CrossEncoder")
    if w2_flex and w2_cross:
        ratio = w2_flex["tokens/s"] / w2_cross["tokens/s"]
        lines.append(f"| W2 engine flex / CrossEncoder (same run) | {ratio:.2f}x | | |")
    w3 = best("W3", "engine flex")
    if w3:
        ms = w3["seconds"] * 1e3
        met = "yes" if ms <= TARGET_W3_MS else "no"
        lines.append(f"| W3 latency after warm-up, engine flex (ms) | {ms:.2f} | <= {TARGET_W3_MS:.0f} | {met} |")
    w8k = best("W8K", "engine flex")
    failed = any(r["workload"].startswith("W8K") and "failed" in r for r in rows)
    label = w8k["workload"] if w8k else "W8K"
    lines.append(
        f"| {label}: the engine in one pass without running out of memory | "
        f"{'done' if w8k else 'failed'} | done | {'yes' if w8k and not failed else 'no'} |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke run, e.g. --device cpu --quick)")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="engine budget per forward pass, packed tokens (default 32,768; --quick 2,048)",
    )
    parser.add_argument(
        "--parity-dir", type=Path, default=PARITY_DIR, help="golden parity folder (checked where present)"
    )
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the results as JSON here (after each workload, so a cut-short run keeps them)",
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available here; run with --device cpu --quick for a smoke run")
    args.max_batch_tokens = args.max_batch_tokens or (2048 if args.quick else 32768)
    with tempfile.TemporaryDirectory(prefix="jlr-gpu-bench-") as directory:
        result = run(args, Path(directory))
    print_report(result)


if __name__ == "__main__":
    main()
