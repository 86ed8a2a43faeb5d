"""dtype="int8": per-token activation scales make each pair's logit independent of its batch-mates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from native_checks import require_native_kernels
from sorting_texts import QUERY, documents

import jina_local_rerank.model.quantization as quantization
from jina_local_rerank import Reranker
from jina_local_rerank.model.quantization import Int8Linear


@pytest.fixture(scope="module")
def int8(checkpoint_dir: Path) -> Reranker:
    return Reranker(checkpoint_dir, device="cpu", dtype="int8")


def test_batched_logits_equal_single_pair_logits(int8: Reranker):
    docs = documents(12, seed=3, scale=3)
    batched = int8.score(QUERY, docs, raw=True).logits
    singles = [int8.score(QUERY, [doc], raw=True).logits[0] for doc in docs]
    assert batched == pytest.approx(singles, abs=1e-3)


def test_int8_stays_close_to_fp32(int8: Reranker, reranker: Reranker):
    docs = documents(12, seed=4, scale=3)
    fp32 = reranker.score(QUERY, docs, raw=True).logits
    assert int8.score(QUERY, docs, raw=True).logits == pytest.approx(fp32, abs=0.1)


def test_encoder_layers_are_int8_and_the_head_stays_fp32(int8: Reranker):
    model = int8.engine.model
    encoder_linears = [m for m in model.bert.encoder.modules() if isinstance(m, (Int8Linear, torch.nn.Linear))]
    assert encoder_linears and all(isinstance(m, Int8Linear) for m in encoder_linears)
    assert isinstance(model.bert.pooler.dense, torch.nn.Linear) and isinstance(model.classifier, torch.nn.Linear)


@pytest.mark.parametrize(
    ("kernels", "levels"),
    [("native", None), ("fbgemm", 256), ("fbgemm", 128), ("int_mm", None)],
    ids=["native", "fbgemm-8bit", "fbgemm-7bit", "int_mm"],
)
def test_int8_linear_rows_are_independent_and_close_to_fp32(monkeypatch, request, kernels: str, levels: int | None):
    if kernels == "native":
        require_native_kernels()
    else:
        request.getfixturevalue("no_native_kernels")
    if kernels == "fbgemm" and not quantization._fbgemm_available():
        pytest.skip("torch has no FBGEMM engine here")
    if levels == 256 and quantization._activation_levels() != 256:
        pytest.skip("8-bit activations can overflow FBGEMM's kernels without AVX512-VNNI")
    monkeypatch.setattr(quantization, "_fbgemm_available", lambda: kernels == "fbgemm")
    if levels is not None:  # the width this CPU would not pick is tested too
        monkeypatch.setattr(quantization, "_activation_levels", lambda: levels)
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    layer = Int8Linear(linear)
    assert (layer._packed is not None) == (kernels == "fbgemm") and layer._native == (kernels == "native")
    x = torch.randn(50, 96) * torch.logspace(-3, 3, 50)[:, None]  # rows of very different magnitudes
    x[7] = 0
    with torch.inference_mode():
        whole = layer(x)
        for rows in (slice(0, 1), slice(5, 9), slice(49, 50)):
            assert torch.equal(layer(x[rows]), whole[rows])
        mixed = torch.cat([x[:10] * 1e4, x[10:]])
        assert torch.equal(layer(mixed)[10:], whole[10:])
        reference = linear(x)
        out = torch.empty(50, 40)
        assert layer(x, out=out) is out and torch.equal(out, whole)
    assert torch.equal(whole[7], linear.bias.detach())
    nonzero = torch.arange(50) != 7
    error = (whole - reference).abs().amax(dim=1) / (reference - linear.bias).abs().amax(dim=1)
    assert error[nonzero].max() < 0.05  # relative to each row's own output range
