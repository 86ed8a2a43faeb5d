"""The throughput benchmark's own arithmetic and baseline: what its table reports must mean what it says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from jina_local_rerank.config import JinaBertConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("engine_throughput", BENCHMARKS / "engine_throughput.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_padded_baseline_computes_the_engines_logits(bench, reranker):
    """The baseline differs in how it batches, not in what it computes."""
    query, documents = "how do closures capture variables?", [
        "A closure keeps the variables of the scope it was defined in.",
        "Lists are mutable sequences.",
        "x " * 90,
    ]
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
