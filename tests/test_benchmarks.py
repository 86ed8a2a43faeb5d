"""The benchmarks' own arithmetic and baselines: what their tables report must mean what they say; the GPU
benchmark runs end to end on CPU at toy sizes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jina_local_rerank.model.attention import ExactLengthAttention
from jina_local_rerank.model.config import JinaBertConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield load_benchmark("engine_throughput")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def gpu_bench():
    path = list(sys.path)
    try:
        yield load_benchmark("gpu")  # puts benchmarks/ and core/ on sys.path itself
    finally:
        sys.path[:] = path


def test_padded_baseline_computes_the_engines_logits(bench, reranker):
    """The baseline differs in how it batches, not in what it computes."""
    query, documents = (
        "how do closures capture variables?",
        [
            "A closure keeps the variables of the scope it was defined in.",
            "Lists are mutable sequences.",
            "x " * 90,
        ],
    )
    expected = reranker.score(query, documents, raw=True).logits
    baseline = bench.padded_baseline(reranker, query, documents, batch_size=2)
    assert max(abs(a - b) for a, b in zip(expected, baseline)) < 1e-4


def test_flop_counts_follow_the_issue_formula_and_the_skipped_last_layer(bench):
    config = JinaBertConfig(
        vocab_size=61056, hidden_size=384, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1536
    )
    length = 300
    # The issue's numbers: 18.9 MFLOP per token for the dense layers plus 6,144 x L for attention.
    assert bench.pair_flops(config, length) == pytest.approx(length * (18.87e6 + 6144 * length), rel=1e-3)
    executed = bench.executed_flops(config, length) / bench.pair_flops(config, length)
    assert 0.70 < executed < 0.80  # three full layers of four, plus the last layer's keys and values


def test_spearman_ranks(bench):
    assert bench.spearman([0.1, 0.5, 0.3], [1.0, 3.0, 2.0]) == 1.0
    assert bench.spearman([0.1, 0.5, 0.3], [3.0, 1.0, 2.0]) == -1.0
    assert bench.spearman([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 4.0, 3.0]) == pytest.approx(0.8)


def test_bert_baseline_has_the_engines_dense_flops_per_token(bench):
    tiny = JinaBertConfig(
        vocab_size=61056, hidden_size=384, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1536
    )
    intermediate = bench.flop_matched_intermediate(tiny, layers=6)
    assert intermediate == 1280  # i - 2h/3
    bert = SimpleNamespace(hidden_size=384, intermediate_size=intermediate, num_hidden_layers=6)
    # Length 1: the attention term (4h per layer and token) is all that differs, BERT having 6 layers to our 4.
    dense_ours = bench.pair_flops(tiny, 1) - 4 * 384 * 4
    dense_bert = bench.pair_flops(bert, 1, feed_forward_matrices=2) - 4 * 384 * 6
    assert dense_ours == dense_bert


def test_gpu_benchmark_parity_check_computes_golden_errors(gpu_bench, parity_dir):
    mode, worst = gpu_bench.golden_errors(parity_dir, "cpu", "float32", ExactLengthAttention, names=("heads8",))
    assert mode == "ExactLengthAttention" and list(worst) == ["heads8"]
    assert 0 < worst["heads8"] < 1e-4


@pytest.mark.slow
def test_gpu_benchmark_runs_every_row_on_cpu(tmp_path):
    """``benchmarks/gpu.py --device cpu --quick``: the GPU table's every workload and implementation, toy sizes."""
    output = tmp_path / "gpu.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "gpu.py"),
            "--device",
            "cpu",
            "--quick",
            "--skip-parity",
            "--json",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(output.read_text())
    assert [r for r in result["rows"] if "failed" in r] == []
    rows = {(r["workload"].split()[0], r["impl"].split(",")[0]) for r in result["rows"]}
    for workload in ("W1", "W2", "W3", "W8K"):
        assert {(workload, "engine flex"), (workload, "engine padded (old path)")} <= rows
    if importlib.util.find_spec("sentence_transformers") is not None:
        assert {r["workload"].split()[0] for r in result["rows"] if r["impl"].startswith("CrossEncoder")} == {
            "W1",
            "W2",
            "W3",
            "W8K",
        }
    assert all(r["seconds"] > 0 and r["tokens"] > 0 and r["tokens/s"] > 0 for r in result["rows"])
    w8k = next(r for r in result["rows"] if r["workload"].startswith("W8K"))
    assert w8k["tokens"] == 4 * 512  # every pair truncated to the window
    notes = dict(result["notes"])
    assert float(notes["W1: max |flex logit - padded logit|"]) < 0.05  # the two paths compute one function (bf16)
    assert "| W1 (2 queries x 2 passages) | engine flex, score_pairs" in completed.stdout
    assert "| ratio and target |" in completed.stdout


@pytest.mark.slow
def test_cpu_precision_benchmark_runs_every_row(tmp_path):
    """``benchmarks/cpu_precision.py --quick``: every mode, every installed peer (OpenVINO and CrossEncoder come with
    the bench extra, which CI does not install), the limits, batch-mates and agreement rows."""
    from importlib.util import find_spec

    pytest.importorskip("bm25s")
    output = tmp_path / "cpu_precision.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "cpu_precision.py"), "--quick", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(output.read_text())
    implementations = {f"engine {m}" for m in ("fp32", "bf16", "int8")}
    if find_spec("openvino"):
        implementations |= {f"OpenVINO {m} (our export)" for m in ("fp32", "bf16")}
    # NNCF cannot quantize the export's attention Loop (export/blocked_attention.py): the row says so, or is there.
    assert "OpenVINO int8 left out: " in completed.stdout or "OpenVINO int8 (our export)" in result["w1_seconds"]
    assert implementations <= set(result["w1_seconds"]) and set(result["w1_seconds"]) == set(result["w3_seconds"])
    assert all(seconds > 0 for seconds in result["w1_seconds"].values())
    assert set(result["limits"]) == {"fp32", "bf16", "int8"} and all(v > 0 for v in result["limits"].values())
    assert set(result["w2_peak_mb"]) == {"fp32", "bf16", "int8"}
    assert max(result["batch_mate_change"].values()) < 1e-3
    assert [a["mode"] for a in result["agreement"]] == ["fp32", "bf16", "int8"]
    assert result["agreement"][0]["mean_spearman"] == pytest.approx(1.0) and result["agreement"][0]["max_change"] == 0
    assert "| goal (same run) | measured | goal | met |" in completed.stdout
