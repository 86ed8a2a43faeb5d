"""Engine throughput on the full tiny shape (random weights), against baselines measured in the same run.

    python benchmarks/engine_throughput.py                 # CPU, fp32 (+ int8)
    python benchmarks/engine_throughput.py --device cuda   # GPU, bf16: the same table

Workloads (see workloads.py): W1 1 query x 100 passages of 24-360 words; W2 1 query x 4 documents of ~4,700
tokens; W3 the README example end to end; MQ many queries x passages. Baselines: the engine's simplest path
(padded batches of 32 in input order, same weights) and sentence-transformers' CrossEncoder on a random BERT of
the same cost per token (6 x 384 MiniLM shape). Model FLOPs count the dense layers and attention of every token
in every layer (the issue's formula); the engine executes fewer (the last layer for <s> only), so its model
GFLOP/s can exceed the matmul rate. On CPU, int8's ranking change is measured on the parity checkpoints.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import workloads  # noqa: E402

from jina_local_rerank import Reranker  # noqa: E402
from jina_local_rerank.checkpoint.files import read_config  # noqa: E402
from jina_local_rerank.evaluation.metrics import spearman  # noqa: E402
from jina_local_rerank.model.attention import alibi_bias  # noqa: E402
from jina_local_rerank.model.config import JinaBertConfig  # noqa: E402
from jina_local_rerank.testing.random_checkpoint import TINY_SHAPE, write_random_checkpoint  # noqa: E402

PARITY_DIR = Path(__file__).resolve().parents[2] / "shared" / "parity"

# The original remote code through sentence-transformers, measured on this 2-core machine (issue text).
ORIGINAL = {"W1 tokens/s": 1056.0, "W2 s": 112.7, "W3 s": 0.107, "load s": 18.5, "load MB": 7070.0}


def median_seconds(run: Callable[[], object], repeats: int, warm_up: bool = True) -> float:
    return interleaved_medians({"run": run}, repeats, warm_up)["run"]


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Median seconds of each run, taken in rounds (one of each per round) so machine drift hits all alike."""
    if warm_up:
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_run(device: str, dtype: torch.dtype, size: int | None = None) -> tuple[Callable[[], object], float]:
    """A large square matmul (4 of them) and its FLOPs: the machine's reference rate, timed among the workloads."""
    n = size or (2048 if device == "cpu" else 8192)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: [a @ b for _ in range(4)]), 4 * 2 * n**3


def layer_flops_per_token(config: JinaBertConfig, length: int, feed_forward_matrices: int = 3) -> float:
    """One layer's FLOPs per token of an ``length``-token pair: its dense layers plus attention.

    With 3 feed-forward matrices of h x i (JinaBERT's GEGLU) this is the model's own count,
    ``JinaBertConfig.layer_flops``. Otherwise ``config`` is BERT-shaped (2 for BERT's MLP): q, k, v and output
    (4 h x h), the feed-forward's matrices, and attention (4 h x ``length``).
    """
    if feed_forward_matrices == 3:
        return config.layer_flops(length)
    h, i = config.hidden_size, config.intermediate_size
    return 2 * (4 * h * h + feed_forward_matrices * h * i) + 4 * h * length


def pair_flops(config: JinaBertConfig, length: int, feed_forward_matrices: int = 3) -> float:
    """The model's FLOPs for one pair (the issue's formula): every layer for every token. ``config`` may be a
    transformers ``BertConfig`` (same field names) with ``feed_forward_matrices=2``."""
    return length * config.num_hidden_layers * layer_flops_per_token(config, length, feed_forward_matrices)


def flop_matched_intermediate(config: JinaBertConfig, layers: int) -> int:
    """Intermediate size of a ``layers``-layer BERT (same hidden size) whose dense FLOPs per token equal ``config``'s.

    Per layer and token, ours costs 2 (4h^2 + 3hi) (GEGLU: two h x i halves in, one i x h out) and BERT's
    2 (4h^2 + 2hi'). Equal totals, L (4h^2 + 3hi) = L' (4h^2 + 2hi'), give i' = (L (4h + 3i) / L' - 4h) / 2: for
    the tiny shape (L 4, h 384, i 1536) as 6 BERT layers, i' = i - 2h/3 = 1,280. Attention (4hL per layer and
    token) then costs BERT L'/L = 1.5x ours: 4% more FLOPs per token at 290 tokens, 30% at 4,700.
    """
    h, i = config.hidden_size, config.intermediate_size
    return round((config.num_hidden_layers * (4 * h + 3 * i) / layers - 4 * h) / 2)


def executed_flops(config: JinaBertConfig, length: int) -> float:
    """FLOPs the engine runs for one pair: every layer but the last in full, then the last layer's keys and values."""
    h = config.hidden_size
    return length * ((config.num_hidden_layers - 1) * layer_flops_per_token(config, length) + 2 * 2 * h * h)


def int8_agreement(parity_dir: Path) -> list[dict]:
    """int8 against fp32 on every parity checkpoint and case with 3+ documents: ranking agreement and logit change."""
    golden = json.loads((parity_dir / "golden.json").read_text())
    rows = []
    for name in sorted(golden["results"]):
        fp32 = Reranker(parity_dir / name, device="cpu", dtype="float32")
        int8 = Reranker(parity_dir / name, device="cpu", dtype="int8")
        for case in golden["cases"]:
            pairs = case.get("pairs") or []
            if len(pairs) < 3 or not all(isinstance(document, str) for _, document in pairs):
                continue
            a = fp32.score_pairs(pairs, raw=True).logits
            b = int8.score_pairs(pairs, raw=True).logits
            top3 = [set(sorted(range(len(x)), key=lambda i, x=x: -x[i])[:3]) for x in (a, b)]
            rows.append(
                {
                    "checkpoint": name,
                    "case": case["name"],
                    "documents": len(pairs),
                    "spread": max(a) - min(a),
                    "max_change": max(abs(x - y) for x, y in zip(a, b)),
                    "spearman": spearman(a, b),
                    "top3": len(top3[0] & top3[1]),
                }
            )
    return rows


def padded_baseline(reranker: Reranker, query: str, documents: list[str], batch_size: int = 32) -> list[float]:
    """The simplest path: input order, padded batches of 32, one masked attention call per layer."""
    engine = reranker.engine
    model = engine.model
    encoded = engine.tokenizer.encode_pairs(
        [query], [(0, d) for d in documents], max_length=reranker.max_length, max_query_length=reranker.max_query_length
    )
    logits: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(encoded.input_ids), batch_size):
            rows = encoded.input_ids[start : start + batch_size]
            longest = max(map(len, rows))
            ids = torch.full((len(rows), longest), engine.tokenizer.pad_id, device=engine.device)
            mask = torch.zeros((len(rows), longest), device=engine.device)
            for r, seq in enumerate(rows):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            bias = (
                alibi_bias(model.alibi_slopes, range(longest), longest)[None]
                + ((1 - mask) * torch.finfo(torch.float32).min)[:, None, None, :]
            )
            x = model.bert.embeddings(ids)
            for layer in model.bert.encoder.layer:
                attn = layer.attention.self
                b, n, hidden = x.shape
                q, k, v = (
                    p(x).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
                    for p in (attn.query, attn.key, attn.value)
                )
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, n, hidden)
                x = layer.mlp(layer.attention.output(context, x))
            logits += model.classifier(model.bert.pooler(x[:, 0])).squeeze(-1).tolist()
    return logits


def sentence_transformers_baseline(
    checkpoint: Path,
    workdir: Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    layers: int = 6,
    intermediate_size: int = 1536,
    max_length: int = 1024,
):
    """CrossEncoder on a random native BERT with ``checkpoint``'s hidden size, heads, vocabulary and tokenizer
    (None if sentence-transformers is not installed); loaded from a local folder, SDPA attention, ``dtype``.

    The defaults are the 6 x 384 MiniLM shape (intermediate 1,536); see :func:`flop_matched_intermediate`.
    """
    try:
        from sentence_transformers import CrossEncoder
        from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
    except ImportError:
        return None
    ours = read_config(checkpoint / "config.json")
    directory = workdir / f"bert-{layers}x{ours.hidden_size}x{intermediate_size}"
    config = BertConfig(
        vocab_size=ours.vocab_size,
        hidden_size=ours.hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=ours.num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    PreTrainedTokenizerFast(
        tokenizer_file=str(checkpoint / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=max_length,
    ).save_pretrained(directory)
    # SDPA where this transformers has it for BERT (sentence-transformers 4+ takes model_kwargs, older releases
    # automodel_args); else the default attention, which cross_encoder_transformer(model).config reports.
    parameters = inspect.signature(CrossEncoder.__init__).parameters
    sdpa = {"model_kwargs" if "model_kwargs" in parameters else "automodel_args": {"attn_implementation": "sdpa"}}
    try:
        model = CrossEncoder(str(directory), device=device, max_length=max_length, **sdpa)
    except (TypeError, ValueError):
        model = CrossEncoder(str(directory), device=device, max_length=max_length)
    # A module since sentence-transformers 4 (heads included); before, the transformers model is all there is.
    (model if isinstance(model, torch.nn.Module) else cross_encoder_transformer(model)).to(dtype)
    return model


def cross_encoder_transformer(model):
    """The transformers model inside a CrossEncoder (``.model`` up to sentence-transformers 3, a submodule since)."""
    from transformers import PreTrainedModel

    held = getattr(model, "model", None)
    if isinstance(held, PreTrainedModel):
        return held
    return next(module for module in model.modules() if isinstance(module, PreTrainedModel))


MEASURE_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
from jina_local_rerank import Reranker
t1 = time.perf_counter()
reranker = Reranker(sys.argv[1], device=sys.argv[2], dtype=sys.argv[3])
reranker.score("warm", ["up"])
t2 = time.perf_counter()
rss_loaded = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
if len(sys.argv) > 4:
    query, documents = json.loads(open(sys.argv[4]).read())
    reranker.score(query, documents)
# VmHWM, not ru_maxrss: the latter keeps the forking parent's size across exec.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rss_mb": rss_loaded, "peak_mb": peak}))
"""


def measure_process(checkpoint: Path, device: str, dtype: str, workload: Path | None = None) -> dict:
    """Load time and resident memory of a fresh process (and its peak after scoring ``workload``)."""
    command = [sys.executable, "-c", MEASURE_PROCESS, str(checkpoint), device, dtype]
    if workload is not None:
        command.append(str(workload))
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the W1 runs (medians are reported)")
    parser.add_argument(
        "--many-queries",
        type=int,
        default=None,
        help="queries in the MQ run (x 50 passages); default 10 on CPU, 1,000 on CUDA",
    )
    parser.add_argument(
        "--parity-dir",
        type=Path,
        default=PARITY_DIR,
        help="golden checkpoints for the int8 ranking check (CPU; skipped where absent)",
    )
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jlr-bench-") as directory:
        run_benchmark(args, Path(directory))


def run_benchmark(args: argparse.Namespace, workdir: Path) -> None:
    """Every workload, baseline and process measurement; prints the tables (and writes ``--json``)."""
    device = args.device
    dtype = args.dtype or ("float32" if device == "cpu" else "bfloat16")
    many_queries = args.many_queries or (10 if device == "cpu" else 1000)
    checkpoint = write_random_checkpoint(workdir / "tiny", TINY_SHAPE, tokenizer_vocab=8000)
    reranker = Reranker(checkpoint, device=device, dtype=dtype)
    config = reranker.engine.model.config
    matmul, matmul_flops = matmul_run(device, torch.float32 if dtype == "float32" else torch.bfloat16)
    rows: list[dict] = []

    def add(workload: str, impl: str, seconds: float, pairs: list[list[str]] | tuple[str, list[str]]) -> None:
        if isinstance(pairs, tuple):
            pairs = [[pairs[0], d] for d in pairs[1]]
        encoded = reranker.engine.tokenizer.encode_pairs(
            list(dict.fromkeys(q for q, _ in pairs)),
            [(list(dict.fromkeys(q for q, _ in pairs)).index(q), d) for q, d in pairs],
            max_length=reranker.max_length,
            max_query_length=reranker.max_query_length,
        )
        lengths = [len(ids) for ids in encoded.input_ids]
        flops = sum(pair_flops(config, n) for n in lengths)
        rows.append(
            {
                "workload": workload,
                "impl": impl,
                "seconds": seconds,
                "pairs/s": len(pairs) / seconds,
                "tokens": sum(lengths),
                "executed GFLOP": sum(executed_flops(config, n) for n in lengths) / 1e9,
                "tokens/s": sum(lengths) / seconds,
                "GFLOP/s": flops / seconds / 1e9,
                "% matmul": 100 * flops / seconds / 1e9 / peak,
            }
        )

    w1 = workloads.w1()
    w1_pairs = [[w1[0], d] for d in w1[1]]
    int8 = Reranker(checkpoint, device="cpu", dtype="int8") if device == "cpu" else None
    w1_runs = {"matmul": matmul, f"engine {dtype}": lambda: reranker.score(*w1)}
    if int8 is not None:
        w1_runs["engine int8"] = lambda: int8.score(*w1)
    w1_runs["baseline: padded batches of 32"] = lambda: padded_baseline(reranker, *w1)
    cross_encoder = sentence_transformers_baseline(checkpoint, workdir) if device == "cpu" else None
    if cross_encoder is not None:
        w1_runs["baseline: sentence-transformers"] = lambda: cross_encoder.predict(
            w1_pairs, batch_size=32, show_progress_bar=False
        )
    w1_seconds = interleaved_medians(w1_runs, args.repeats)
    peak = matmul_flops / w1_seconds.pop("matmul") / 1e9
    for impl, seconds in w1_seconds.items():
        add("W1", impl, seconds, w1)
    tokens_per_word = sum(len(i) for i in reranker.engine.tokenizer.tokenize(w1[1])) / sum(
        len(d.split()) for d in w1[1]
    )
    w2 = workloads.w2(tokens_per_word)
    add("W2", f"engine {dtype}", median_seconds(lambda: reranker.score(*w2), 1, warm_up=False), w2)
    w3 = (workloads.SEED_QUERY, workloads.SEED_DOCUMENTS)
    w3_runs = {f"engine {dtype} (rerank, end to end)": lambda: reranker.rerank(*w3)}
    if int8 is not None:
        w3_runs["engine int8 (rerank, end to end)"] = lambda: int8.rerank(*w3)
    for impl, seconds in interleaved_medians(w3_runs, 30).items():
        add("W3", impl, seconds, w3)
    mq = workloads.many_queries(many_queries, 50)
    mq_seconds = median_seconds(lambda: reranker.score_pairs(mq), 1, warm_up=False)
    add("MQ", f"engine {dtype}, {many_queries} queries x 50", mq_seconds, mq)
    has_parity = device == "cpu" and (args.parity_dir / "golden.json").is_file()
    agreement = int8_agreement(args.parity_dir) if has_parity else []

    w2_file = workdir / "w2.json"
    w2_file.write_text(json.dumps(w2))
    loaded = measure_process(checkpoint, device, dtype)
    w2_process = measure_process(checkpoint, device, dtype, w2_file)

    print(
        f"\nmachine: {torch.get_num_threads()} threads, {device}; measured matmul rate {peak:.1f} GFLOP/s "
        f"(2,048-square, median over the W1 rounds) "
        f"({'fp32' if dtype == 'float32' else 'bf16'})"
    )
    print(
        f"model: full tiny shape, {sum(p.numel() for p in reranker.engine.model.parameters()):,} parameters, "
        f"random weights; W1 mean pair length {rows[0]['tokens/s'] * rows[0]['seconds'] / 100:.0f} tokens\n"
    )
    print("| workload | implementation | median s | pairs/s | tokens/s | model GFLOP/s | % of matmul |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workload']} | {r['impl']} | {r['seconds']:.3f} | {r['pairs/s']:.1f} | {r['tokens/s']:.0f} | "
            f"{r['GFLOP/s']:.1f} | {r['% matmul']:.0f}% |"
        )
    engine_w1 = rows[0]["tokens/s"]
    print("\n| ratio (same run unless noted) | value |")
    print("|---|---:|")
    for r in rows[1:]:
        if r["workload"] == "W1":
            print(f"| W1 engine {dtype} / {r['impl']} | {engine_w1 / r['tokens/s']:.2f}x |")
    if device == "cpu":
        print(f"| W1 engine / original (issue's measurement) | {engine_w1 / ORIGINAL['W1 tokens/s']:.1f}x |")
        w2_row = next(r for r in rows if r["workload"] == "W2")
        print(f"| W2 original s (issue's measurement) / engine s | {ORIGINAL['W2 s'] / w2_row['seconds']:.1f}x |")
    w3_row = next(r for r in rows if r["workload"] == "W3")
    print(
        f"| W3: {w3_row['tokens']} tokens; their executed FLOPs at the measured matmul rate (ms) | "
        f"{w3_row['executed GFLOP'] / peak * 1e3:.0f} |"
    )
    if agreement:
        print(
            "\n| int8 vs fp32: checkpoint / case | documents | fp32 logit spread | max abs logit change | "
            "Spearman | top-3 agreement |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for a in agreement:
            print(
                f"| {a['checkpoint']} / {a['case']} | {a['documents']} | {a['spread']:.3f} | {a['max_change']:.3f} | "
                f"{a['spearman']:.3f} | {a['top3']}/3 |"
            )
    print("\n| process measurement (fresh process) | value |")
    print("|---|---:|")
    print(f"| import jina_local_rerank (s) | {loaded['import_s']:.2f} |")
    print(f"| load to a ready engine (s) | {loaded['load_s']:.2f} |")
    print(f"| resident after load (MB) | {loaded['rss_mb']:.0f} |")
    print(f"| W2 peak resident (MB) | {w2_process['peak_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "matmul_gflops": peak,
                    "process": loaded,
                    "w2_process": w2_process,
                    "int8_agreement": agreement,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
