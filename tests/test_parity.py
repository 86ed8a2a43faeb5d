"""Parity with the original implementation: ``../shared/parity/golden.json`` logits within 1e-4 (fp32), 0.2 (bf16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from attention_reference import CompiledFlexAttention, needs_flex

from jina_local_rerank import Reranker
from jina_local_rerank.model.attention import ExactLengthAttention, PackedAttention, PaddedAttention

CHECKPOINTS = ("tiny", "turbo", "heads8")
ATOL = 1e-4
# bf16 weights and activations against the fp32 golden logits, the bound the exact-length CPU path meets (worst
# case 0.124, turbo / lengths_batch). The flex kernel's worst case on CPU is 0.177 (turbo / single_text): like every
# fused kernel it rounds attention probabilities to bf16 before multiplying the values; the exact-length path keeps
# fp32.
BF16_ATOL = 0.2
# Flex through its compiled kernel (the GPU code path, tiles skipped); its eager reference is in test_flex_attention.
MODES = [ExactLengthAttention, PaddedAttention, pytest.param(CompiledFlexAttention, marks=needs_flex)]
MODE_IDS = ["exact-length", "padded", "flex"]


@pytest.fixture(scope="module")
def golden(parity_dir: Path) -> dict:
    return json.loads((parity_dir / "golden.json").read_text())


@pytest.fixture(scope="module", params=CHECKPOINTS)
def parity_reranker(request: pytest.FixtureRequest, parity_dir: Path) -> tuple[str, Reranker]:
    return request.param, Reranker(parity_dir / request.param, device="cpu", dtype="float32")


def golden_case_errors(golden: dict, name: str, reranker: Reranker, mode: type[PackedAttention]) -> dict[str, float]:
    """Max |logit - golden logit| per case, the golden inputs packed into one forward pass through ``mode``."""
    errors = {}
    model = reranker.engine.model
    for case in golden["cases"]:
        expected = golden["results"][name][case["name"]]
        lengths = expected["seq_lens"]
        packed = [t for ids, n in zip(expected["input_ids"], lengths) for t in ids[:n]]
        with torch.inference_mode():
            logits = model(torch.tensor(packed, device=reranker.engine.device), mode(lengths, model.alibi_slopes))
        assert logits.dtype == torch.float32
        errors[case["name"]] = (logits.cpu() - torch.tensor(expected["logits"])).abs().max().item()
    return errors


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_model_matches_golden_logits_on_golden_inputs(parity_reranker, golden, mode):
    """Every attention mode (per-sequence for CPUs, padded, flex for GPUs) reproduces the original in fp32."""
    name, reranker = parity_reranker
    for case, error in golden_case_errors(golden, name, reranker, mode).items():
        assert error < ATOL, f"{name}/{case}: max |logit error| {error:.2e}"


@pytest.mark.slow
@needs_flex
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_bf16_logits_of_exact_length_and_flex_are_within_the_bf16_tolerance(parity_dir, golden, name):
    reranker = Reranker(parity_dir / name, device="cpu", dtype="bfloat16")
    for mode in (ExactLengthAttention, CompiledFlexAttention):
        errors = golden_case_errors(golden, name, reranker, mode)
        worst = max(errors, key=errors.get)
        assert errors[worst] < BF16_ATOL, f"{name}/{worst} through {mode.__name__}: {errors[worst]:.3f}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("dtype", "atol"), [("float32", ATOL), ("bfloat16", BF16_ATOL)])
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_cuda_default_mode_matches_golden_logits(parity_dir, golden, name, dtype, atol):
    """On a GPU the engine's own mode (compiled flex on compute capability 8.0+) within the CPU tolerances."""
    reranker = Reranker(parity_dir / name, device="cuda", dtype=dtype)
    errors = golden_case_errors(golden, name, reranker, reranker.engine.attention)
    worst = max(errors, key=errors.get)
    assert errors[worst] < atol, f"{name}/{worst} through {reranker.engine.attention.__name__}: {errors[worst]:.3e}"


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
