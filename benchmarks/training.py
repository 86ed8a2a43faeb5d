"""Training throughput on the tiny shape against sentence-transformers' CrossEncoderTrainer, and peak memory with
8k-token documents, measured in the same run.

    flock /tmp/cpu.lock python benchmarks/training.py            # CPU (the numbers in docs/fine-tuning.md)
    python benchmarks/training.py --device cuda --steps 40         # GPU (bf16 autocast for ours)

Same data for both trainers: the docstring task's queries, each with its positive and three BM25 negatives, as
lists for ours and as (query, document, label) pairs for sentence-transformers, truncated to the same 512 tokens
by the same tokenizer. Same cost per token: the tiny shape (4 layers, hidden 384, 12 heads) has a GEGLU
feed-forward (``gated_layers`` 384 -> 2 x 1536, ``wo`` 1536 -> 384: 3 x 384 x 1536 MACs per token); a plain GELU
BERT spends 2 x 384 x I, so the baseline BERT has intermediate size I = 2304, and the attention projections
(4 x 384 x 384) are the same. Both run pointwise BCE with AdamW, ``--batch-pairs`` pairs per step for
sentence-transformers (padded to the step's longest pair) and the same tokens per step for ours (packed, no
padding). Tokens/s counts real tokens, not padding, over the steps after the warm-up ones.

Memory: one step on a list of two pairs of 4,096 and of 8,192 tokens, in a fresh process each, with and without
activation checkpointing (peak resident memory, VmHWM, on CPU, under a limit of 80% of the machine's memory;
``torch.cuda.max_memory_allocated`` on GPU).

At the defaults (``--defaults``): a whole ``Trainer`` run, in a fresh process per row, on short documents (the
docstring triplets, pairs up to 512 tokens), medium ones (about 2,000 tokens, ``max_length=2048``) and 8k ones
(about 8,000 tokens, ``max_length=8192``), tiny and turbo shapes, every other setting at its default (seven
negatives per positive, BM25-mined; 16,384 tokens per step): the peak resident memory of the process (data,
mining, model, optimizer and the steps) and the median tokens/s of the steps after the first. ``--before DIR``
runs the same rows with the package in ``DIR`` (e.g. ``git worktree add /tmp/before <commit>`` then
``--before /tmp/before/core``), in the same run, for same-run ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from engine_throughput import flop_matched_intermediate, sentence_transformers_baseline  # noqa: E402

from jina_local_rerank.checkpoint.files import read_config  # noqa: E402
from jina_local_rerank.engine.scoring_engine import get_engine  # noqa: E402
from jina_local_rerank.engine.tokenization import PairTokenizer  # noqa: E402
from jina_local_rerank.evaluation.runs import BM25Index  # noqa: E402
from jina_local_rerank.install_hints import install_hint  # noqa: E402
from jina_local_rerank.options import RerankerOptions  # noqa: E402
from jina_local_rerank.testing.docstring_task import docstring_pairs  # noqa: E402
from jina_local_rerank.testing.random_checkpoint import TINY_SHAPE, TURBO_SHAPE, write_random_checkpoint  # noqa: E402
from jina_local_rerank.training import Trainer, TrainingConfig  # noqa: E402

MAX_LENGTH = 512
NEGATIVES = 3


def triplets(count: int) -> list[dict]:
    """``count`` docstring queries with their positive and the three best BM25 negatives (deterministic)."""
    pairs = docstring_pairs()[:count]
    documents = [rest for _, _, rest in pairs]
    rows = []
    for index, scores in enumerate(BM25Index(documents).scores([summary for _, summary, _ in pairs])):
        ranked = [i for i in scores.argsort()[::-1].tolist() if i != index][:NEGATIVES]
        rows.append(
            {"query": pairs[index][1], "positive": documents[index], "negatives": [documents[i] for i in ranked]}
        )
    return rows


def pair_lengths(rows: list[dict], tokenizer: PairTokenizer) -> list[int]:
    """Tokens of every (query, document) pair of ``rows`` at ``MAX_LENGTH``, in list order."""
    queries = [row["query"] for row in rows]
    pairs = [(i, doc) for i, row in enumerate(rows) for doc in (row["positive"], *row["negatives"])]
    encoded = tokenizer.encode_pairs(queries, pairs, max_length=MAX_LENGTH, max_query_length=MAX_LENGTH // 2)
    return [len(ids) for ids in encoded.input_ids]


def steady_rate(times: list[float], tokens: list[int], warm_up: int) -> tuple[float, float]:
    """Median tokens/s over the steps after ``warm_up`` (each step's tokens over its time) and the mean."""
    rates = [n / t for n, t in zip(tokens[warm_up:], times[warm_up:])]
    return statistics.median(rates), sum(tokens[warm_up:]) / sum(times[warm_up:])


class _Enough(Exception):
    """Raised from the step callback to end a measured run early."""


def ours(checkpoint: Path, data: Path, steps: int, step_tokens: int, device: str, workdir: Path) -> dict:
    """Our trainer on the lists, stopped after ``steps`` steps; per-step wall time from its step reports."""
    stamps, tokens = [time.perf_counter()], []

    def on_step(report) -> None:
        stamps.append(time.perf_counter())
        tokens.append(report.tokens)
        if report.step == steps:
            raise _Enough

    config = TrainingConfig(
        loss="bce",
        negatives=NEGATIVES,
        step_tokens=step_tokens,
        learning_rate=2e-5,
        save_every=None,
        show_progress="never",
    )
    options = RerankerOptions(
        model=str(checkpoint), device=device, max_length=MAX_LENGTH, max_batch_tokens=max(step_tokens, MAX_LENGTH)
    )
    try:
        Trainer(options, train=data, output=workdir / "ours", config=config, overwrite=True).fit(on_step=on_step)
    except _Enough:
        pass
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    # The first interval includes reading the data and loading the model: count from the second step on.
    return {"times": times[1:], "tokens": tokens[1:]}


def sentence_transformers_run(
    checkpoint: Path, rows: list[dict], steps: int, batch_pairs: int, device: str, workdir: Path, lengths: list[int]
) -> dict | None:
    """CrossEncoderTrainer with BinaryCrossEntropyLoss on a GELU BERT of the tiny shape's cost per token."""
    try:
        from datasets import Dataset
        from sentence_transformers.cross_encoder import CrossEncoderTrainer
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
        from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments
        from transformers import TrainerCallback
    except ImportError as exc:
        print(f"sentence-transformers baseline skipped ({exc}); {install_hint('bench')}")
        return None
    config = read_config(checkpoint / "config.json")
    intermediate = flop_matched_intermediate(config, config.num_hidden_layers)  # 2 x 384 x I = 3 x 384 x 1536
    model = sentence_transformers_baseline(
        checkpoint,
        workdir,
        device=device,
        layers=config.num_hidden_layers,
        intermediate_size=intermediate,
        max_length=MAX_LENGTH,
    )
    pairs = [
        (row["query"], doc, float(label))
        for row in rows
        for doc, label in ((row["positive"], 1), *((negative, 0) for negative in row["negatives"]))
    ]
    dataset = Dataset.from_dict(
        {"query": [p[0] for p in pairs], "document": [p[1] for p in pairs], "label": [p[2] for p in pairs]}
    )
    stamps: list[float] = []

    class Stamps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    args = CrossEncoderTrainingArguments(
        output_dir=str(workdir / "st"),
        per_device_train_batch_size=batch_pairs,
        max_steps=steps + 1,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=device.startswith("cuda"),
        dataloader_drop_last=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=dataset, loss=BinaryCrossEntropyLoss(model), callbacks=[Stamps()]
    )
    trainer.train()
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    mean_tokens = statistics.fmean(lengths)  # real tokens per pair (batches are random draws of the pairs)
    return {"times": times, "tokens": [round(mean_tokens * batch_pairs)] * len(times), "intermediate": intermediate}


MEMORY_PROCESS = """
import json, sys, time, torch
from jina_local_rerank.training.modeling import enable_activation_checkpointing, trainable_model, training_attention
from jina_local_rerank.training.losses import SoftmaxCrossEntropyLoss
checkpoint, device, checkpointing, length = sys.argv[1], torch.device(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
model = trainable_model(__import__("pathlib").Path(checkpoint), device)
if checkpointing:
    enable_activation_checkpointing(model)
ids = torch.randint(5, 3000, (2 * length,), device=device)
autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
start = time.perf_counter()
with autocast:
    logits = model(ids, training_attention([length, length], model))
loss = SoftmaxCrossEntropyLoss()(logits.float()[None], torch.tensor([[1.0, 0.0]], device=device),
                                 torch.ones(1, 2, dtype=torch.bool, device=device))
loss.sum().backward()
if device.type == "cuda":
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"peak_mb": peak, "step_s": time.perf_counter() - start}))
"""


def memory_limit() -> int:
    """Bytes a memory row may use: 80% of the machine's memory (a row over it reports "out of memory")."""
    total_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return total_kb * 1024 * 8 // 10


def memory(checkpoint: Path, device: str, checkpointing: bool, length: int) -> dict | None:
    """One step in a fresh process under :func:`memory_limit`; ``None`` where it ran out of memory."""
    limit = memory_limit()
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_PROCESS, str(checkpoint), device, "1" if checkpointing else "0", str(length)],
        capture_output=True,
        text=True,
        preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))) if device == "cpu" else None,
    )
    if completed.returncode != 0:
        if "alloc" in completed.stderr or "out of memory" in completed.stderr or completed.returncode < 0:
            return None
        raise RuntimeError(completed.stderr)
    return json.loads(completed.stdout.strip().splitlines()[-1])


# Each row's documents: (name, max_length (None: the default, 512), activation checkpointing).
DOCUMENTS = [("short", None, False), ("medium", 2048, False), ("8k", 8192, False), ("8k", 8192, True)]
ROW_LIMIT_BYTES = 14 * 2**30  # address space of a row's process: a row over it reports "over 14 GB"

ROW_PROCESS = """
import json, statistics, sys, time
from pathlib import Path
from jina_local_rerank.options import RerankerOptions
from jina_local_rerank.training import Trainer, TrainingConfig
checkpoint, data, output, max_length, steps, checkpointing = sys.argv[1:7]
rates = []
class Enough(Exception):
    pass
def on_step(report):
    rates.append(report.tokens_per_second)
    if report.step == int(steps):
        raise Enough
options = RerankerOptions(model=checkpoint, device="cpu", max_length=None if max_length == "0" else int(max_length))
try:
    config = TrainingConfig(save_every=None, show_progress="never", activation_checkpointing=checkpointing == "1")
    Trainer(options, train=data, output=output, config=config, overwrite=True).fit(on_step=on_step)
except Enough:
    pass
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"peak_mb": peak, "tokens_per_s": statistics.median(rates[1:] or rates)}))
"""


def long_rows(count: int, tokens: int, tokenizer: PairTokenizer) -> list[dict]:
    """``count`` queries, each with a positive and seven negatives of about ``tokens`` tokens: docstrings laid end to
    end (the docstring task's summaries as queries), so the documents are as long as asked and all distinct."""
    pairs = docstring_pairs()
    lengths = [len(ids) for ids in tokenizer.tokenize([rest for _, _, rest in pairs])]
    texts, rows, cursor = [], [], 0
    for _ in range(count * 8):
        parts, total = [], 0
        while total < tokens:
            parts.append(pairs[cursor % len(pairs)][2])
            total += lengths[cursor % len(pairs)] + 1
            cursor += 1
        texts.append(" ".join(parts))
    for i in range(count):
        rows.append({"query": pairs[i][1], "positive": texts[8 * i], "negatives": texts[8 * i + 1 : 8 * i + 8]})
    return rows


def defaults_row(
    source: Path | None,
    checkpoint: Path,
    data: Path,
    max_length: int | None,
    checkpointing: bool,
    steps: int,
    workdir: Path,
) -> dict | None:
    """One ``Trainer`` run at the defaults in a fresh process (``source``: the package folder to import, default
    this checkout's); ``None`` where it went over :data:`ROW_LIMIT_BYTES`."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            ROW_PROCESS,
            str(checkpoint),
            str(data),
            str(workdir / "row-output"),
            str(max_length or 0),
            str(steps),
            "1" if checkpointing else "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (ROW_LIMIT_BYTES, ROW_LIMIT_BYTES)),
    )
    if completed.returncode != 0:
        if "alloc" in completed.stderr or "memory" in completed.stderr or completed.returncode < 0:
            return None
        raise RuntimeError(completed.stderr)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def defaults_table(args: argparse.Namespace, workdir: Path) -> None:
    """The ``--defaults`` rows: peak memory and tokens/s at the defaults, before and after where ``--before``."""
    shapes = {name: shape for name, shape in (("tiny", TINY_SHAPE), ("turbo", TURBO_SHAPE)) if name in args.shapes}
    checkpoints = {name: write_random_checkpoint(workdir / name, shape, seed=0) for name, shape in shapes.items()}
    tokenizer = get_engine(next(iter(checkpoints.values())), device="cpu").tokenizer
    documents = [row for row in DOCUMENTS if row[0] in args.documents]
    datasets = {}
    for docs, max_length, _ in documents:
        rows = (
            triplets(args.queries) if max_length is None else long_rows(args.long_queries, max_length - 48, tokenizer)
        )
        datasets[docs] = workdir / f"{docs}.jsonl"
        datasets[docs].write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    sources = [("before", args.before), ("after", None)] if args.before else [("now", None)]
    print(
        f"training at the defaults, CPU, {os.cpu_count()} cores: peak resident memory of the whole run and median "
        f"tokens/s of the steps after the first (over {ROW_LIMIT_BYTES / 2**30:.0f} GB: the row's limit)"
    )
    print()
    header = " | ".join(f"{label} peak MB | {label} tokens/s" for label, _ in sources)
    print(f"| documents | settings | shape | {header} |" + (" tokens/s ratio |" if args.before else ""))
    print("|---|---|---|" + "---|---|" * len(sources) + ("---|" if args.before else ""))
    for docs, max_length, checkpointing in documents:
        steps = args.short_steps if max_length is None else args.long_steps
        settings = ("defaults" if max_length is None else f"--max-length {max_length}") + (
            " --activation-checkpointing" if checkpointing else ""
        )
        for shape in shapes:
            # Checkpointing rows run only with this checkout: they show a setting, not a change.
            results = [
                defaults_row(source, checkpoints[shape], datasets[docs], max_length, checkpointing, steps, workdir)
                if not (checkpointing and label == "before")
                else {}
                for label, source in sources
            ]
            cells = " | ".join(
                "over the limit | "
                if r is None
                else " | "
                if not r
                else f"{r['peak_mb']:,.0f} | {r['tokens_per_s']:,.0f}"
                for r in results
            )
            ratio = ""
            if args.before:
                ratio = (
                    " |" if not all(results) else f" {results[1]['tokens_per_s'] / results[0]['tokens_per_s']:.2f}x |"
                )
            print(f"| {docs} | {settings} | {shape} | {cells} |{ratio}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=12, help="measured steps per trainer (after one warm-up step)")
    parser.add_argument("--batch-pairs", type=int, default=16, help="pairs per sentence-transformers step")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument(
        "--long-tokens", type=int, nargs="+", default=[4096, 8192], help="document lengths of the memory rows"
    )
    parser.add_argument(
        "--defaults", action="store_true", help="instead: peak memory and tokens/s of whole runs at the defaults (CPU)"
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="with --defaults: also run the rows with the package folder DIR (an earlier commit's core/)",
    )
    parser.add_argument("--short-steps", type=int, default=4, help="with --defaults: steps of the short rows")
    parser.add_argument("--shapes", nargs="+", default=["tiny", "turbo"], help="with --defaults: the shapes")
    parser.add_argument("--documents", nargs="+", default=["short", "medium", "8k"], help="with --defaults: the rows")
    parser.add_argument(
        "--long-queries", type=int, default=4, help="with --defaults: queries of the medium and 8k rows"
    )
    parser.add_argument("--long-steps", type=int, default=2, help="with --defaults: steps of the medium and 8k rows")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        if args.defaults:
            defaults_table(args, workdir)
            return
        checkpoint = write_random_checkpoint(workdir / "tiny", TINY_SHAPE, seed=0)
        rows = triplets(args.queries)
        data = workdir / "train.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        lengths = pair_lengths(rows, get_engine(checkpoint, device="cpu").tokenizer)
        step_tokens = round(statistics.fmean(lengths) * args.batch_pairs)  # the same real tokens per step

        st = sentence_transformers_run(checkpoint, rows, args.steps, args.batch_pairs, args.device, workdir, lengths)
        packed = ours(checkpoint, data, args.steps + 1, step_tokens, args.device, workdir)

        print(
            f"training throughput, {args.device}, tiny shape (4 x 384), {MAX_LENGTH}-token pairs "
            f"(mean {statistics.fmean(lengths):.0f} tokens), {args.batch_pairs} pairs (~{step_tokens} tokens) "
            f"per step, {args.steps} steps after warm-up"
        )
        print()
        print("| trainer | median tokens/s | mean tokens/s | ratio |")
        print("|---|---|---|---|")
        ours_median, ours_mean = steady_rate(packed["times"], packed["tokens"], 0)
        base = None
        if st is not None:
            st_median, st_mean = steady_rate(st["times"], st["tokens"], 0)
            base = st_median
        print(
            f"| jina-local-rerank Trainer (packed, no padding) | {ours_median:,.0f} | {ours_mean:,.0f} | "
            f"{ours_median / base:.2f}x |"
            if base
            else f"| jina-local-rerank Trainer | {ours_median:,.0f} | {ours_mean:,.0f} | |"
        )
        if st is not None:
            print(
                f"| sentence-transformers CrossEncoderTrainer (GELU BERT, I={st['intermediate']}) | "
                f"{st_median:,.0f} | {st_mean:,.0f} | 1.00x |"
            )
        print()
        print(
            f"peak memory of one step on a list of two pairs of one length (tiny shape; out of memory: over "
            f"{memory_limit() / 2**30:.0f} GB)"
            if args.device == "cpu"
            else "peak memory of one step (tiny shape)"
        )
        print()
        print("| pair tokens | activation checkpointing | peak MB | step s |")
        print("|---|---|---|---|")
        for length in args.long_tokens:
            for checkpointing in (False, True):
                result = memory(checkpoint, args.device, checkpointing, length)
                cells = (
                    ("out of memory", "")
                    if result is None
                    else (f"{result['peak_mb']:,.0f}", f"{result['step_s']:.1f}")
                )
                print(f"| {length:,} | {'on' if checkpointing else 'off'} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
