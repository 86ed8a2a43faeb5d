"""Parity with the original implementation: ``../shared/parity/golden.json`` logits within 1e-4 (fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jina_local_rerank import Reranker
from jina_local_rerank.attention import ExactLengthAttention, PaddedAttention

CHECKPOINTS = ("tiny", "turbo", "heads8")
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden(parity_dir: Path) -> dict:
    return json.loads((parity_dir / "golden.json").read_text())


@pytest.fixture(scope="module", params=CHECKPOINTS)
def parity_reranker(request: pytest.FixtureRequest, parity_dir: Path) -> tuple[str, Reranker]:
    return request.param, Reranker(parity_dir / request.param, device="cpu", dtype="float32")


@pytest.mark.parametrize("mode", [ExactLengthAttention, PaddedAttention], ids=["exact-length", "padded"])
def test_model_matches_golden_logits_on_golden_inputs(parity_reranker, golden, mode):
    """Both attention paths (per-sequence for CPUs, one padded batch for GPUs) reproduce the original."""
    name, reranker = parity_reranker
    for case in golden["cases"]:
        expected = golden["results"][name][case["name"]]
        lengths = expected["seq_lens"]
        packed = [t for ids, n in zip(expected["input_ids"], lengths) for t in ids[:n]]
        model = reranker.engine.model
        with torch.inference_mode():
            logits = model(torch.tensor(packed), mode(lengths, model.alibi_slopes))
        error = (logits - torch.tensor(expected["logits"])).abs().max().item()
        assert error < ATOL, f"{name}/{case['name']}: max |logit error| {error:.2e}"


def _pair_cases(golden: dict) -> list[dict]:
    return [case for case in golden["cases"] if all(doc is not None for _, doc in case["pairs"])]


def test_tokenization_matches_golden_input_ids(parity_reranker, golden):
    name, reranker = parity_reranker
    for case in _pair_cases(golden):
        expected = golden["results"][name][case["name"]]
        queries = list(dict.fromkeys(q for q, _ in case["pairs"]))
        encoded = reranker.engine.tokenizer.encode_pairs(
            queries,
            [(queries.index(q), d) for q, d in case["pairs"]],
            max_length=8192,
            max_query_length=8192 - 5,
        )
        unpadded = [ids[:length] for ids, length in zip(expected["input_ids"], expected["seq_lens"])]
        assert encoded.input_ids == unpadded, case["name"]


def test_engine_scores_match_golden_logits_and_sigmoid_scores(parity_reranker, golden):
    name, reranker = parity_reranker
    for case in _pair_cases(golden):
        expected = golden["results"][name][case["name"]]
        result = reranker.score_pairs(case["pairs"], raw=True)
        assert max(abs(a - b) for a, b in zip(result.logits, expected["logits"])) < ATOL, case["name"]
        probabilities = reranker.score_pairs(case["pairs"]).scores
        assert max(abs(a - b) for a, b in zip(probabilities, expected["scores"])) < ATOL, case["name"]


def test_scores_do_not_depend_on_batch_composition_or_order(parity_reranker, golden):
    name, reranker = parity_reranker
    case = next(c for c in golden["cases"] if c["name"] == "lengths_batch")
    batched = reranker.score_pairs(case["pairs"], raw=True).logits
    alone = [reranker.score_pairs([pair], raw=True).logits[0] for pair in case["pairs"]]
    reversed_order = reranker.score_pairs(case["pairs"][::-1], raw=True).logits[::-1]
    assert max(abs(a - b) for a, b in zip(batched, alone)) < 1e-5
    assert max(abs(a - b) for a, b in zip(batched, reversed_order)) < 1e-5


def test_long_pair_is_scored_without_truncation(parity_reranker, golden):
    name, reranker = parity_reranker
    case = next(c for c in golden["cases"] if c["name"] == "long_3000")
    result = reranker.score_pairs(case["pairs"], raw=True)
    assert not any(result.truncated)
    assert max(golden["results"][name]["long_3000"]["seq_lens"]) > 3000
