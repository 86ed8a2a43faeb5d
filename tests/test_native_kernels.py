"""The native CPU kernels of the low-precision modes (``model/native/*.cpp``): their numbers against float64
references, the engine's choice of them, and how they are built, cached and turned off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from attention_reference import packed_qkv, reference_attention
from native_checks import require_native_kernels
from op_counts import op_counts
from sorting_texts import QUERY, documents

from jina_local_rerank import Reranker
from jina_local_rerank.engine.scoring_engine import clear_engine_cache
from jina_local_rerank.model import native_kernels, row_blocks
from jina_local_rerank.model.attention import ExactLengthAttention, NativeAttention, PackedAttention, alibi_slopes
from jina_local_rerank.model.quantization import Int8Linear

ops = torch.ops.jina_local_rerank_cpu
LENGTHS = [1, 17, 290, 33, 1500]  # 1,500 tokens: long enough that the steep heads skip far keys


@pytest.fixture(autouse=True)
def native():
    require_native_kernels()


def bf16_rounded(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.bfloat16().float() for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32-inputs", "bf16-inputs"])
@pytest.mark.parametrize("head_dim", [32, 64])
@pytest.mark.parametrize("cls_only", [False, True], ids=["all-rows", "cls-only"])
def test_attention_is_the_softmax_of_the_bf16_rounded_inputs(dtype, head_dim, cls_only):
    heads = 12 if head_dim == 32 else 6
    q, k, v = packed_qkv(LENGTHS, heads, seed=3, query_scale=2.0, head_dim=head_dim)
    attention = NativeAttention(LENGTHS, alibi_slopes(heads))
    reference = reference_attention(*bf16_rounded(q, k, v), attention)
    rows = attention.cls_rows if cls_only else slice(None)
    out = attention(q[rows].to(dtype), k.to(dtype), v.to(dtype), cls_only)
    assert out.dtype == dtype and out.shape == q[rows].shape
    error = (out.double() - reference[rows]).abs()
    # What remains: the softmax weights rounded to bf16 (relative 2^-9) and, for bf16 outputs, the output's rounding.
    assert error.max() < (0.01 if dtype == torch.float32 else 0.03)
    assert error.mean() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32-inputs", "bf16-inputs"])
def test_cls_attention_is_the_softmax_weighted_sum_of_the_input_rows(dtype):
    torch.manual_seed(4)
    heads, width = 12, 64
    x = torch.randn(sum(LENGTHS), width).to(dtype)
    u = torch.randn(heads, len(LENGTHS), width)
    slopes = alibi_slopes(heads)
    sums = ops.cls_attention(x, u, torch.tensor(LENGTHS), slopes, 0.25)
    assert sums.shape == u.shape and sums.dtype == torch.float32
    for s, (start, length) in enumerate(zip(NativeAttention(LENGTHS, slopes).offsets, LENGTHS)):
        rows = x[start : start + length].double()
        scores = u[:, s].double() @ rows.T * 0.25 - slopes.double()[:, None] * torch.arange(length)
        expected = scores.softmax(-1) @ rows  # [heads, width]
        assert (sums[:, s].double() - expected).abs().max() < 1e-4


def cls_context_inputs(heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear, torch.nn.Linear]:
    torch.manual_seed(6)
    width = 32 * heads
    x, q = torch.randn(sum(LENGTHS), width), torch.randn(len(LENGTHS), heads, 32) * 2
    return x, q, torch.nn.Linear(width, width), torch.nn.Linear(width, width)


@torch.inference_mode()
def test_the_last_layer_s_cls_context_folds_the_key_and_value_projections_exactly():
    # In fp32, NativeAttention's <s> context (no key or value rows) is exact-length attention over the projections'
    # keys and values, to fp32 rounding.
    x, q, key, value = cls_context_inputs(12)
    folded = NativeAttention(LENGTHS, alibi_slopes(12)).cls_context(x, q, key, value)
    projected = ExactLengthAttention(LENGTHS, alibi_slopes(12)).cls_context(x, q, key, value)
    assert folded.shape == projected.shape == q.shape
    assert (folded - projected).abs().max() < 2e-5


@torch.inference_mode()
def test_heads_not_a_multiple_of_four_get_the_last_layer_s_keys_and_values_projected():
    x, q, key, value = cls_context_inputs(6)
    attention = NativeAttention(LENGTHS, alibi_slopes(6))
    calls = native_op_counts(lambda: attention.cls_context(x, q, key, value))
    assert calls == Counter({"alibi_attention": 1})
    assert torch.equal(
        attention.cls_context(x, q, key, value), PackedAttention.cls_context(attention, x, q, key, value)
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_the_folded_last_layer_scores_as_the_projected_one(head32_checkpoint, monkeypatch, dtype):
    reranker = Reranker(head32_checkpoint, device="cpu", dtype=dtype)
    docs = documents(12, seed=3, scale=3)
    counts = native_op_counts(lambda: reranker.score(QUERY, docs))
    layers = reranker.engine.model.config.num_hidden_layers
    assert counts["cls_attention"] == 1 and counts["alibi_attention"] == layers - 1
    folded = reranker.score(QUERY, docs, raw=True).logits
    monkeypatch.setattr(NativeAttention, "cls_context", ExactLengthAttention.cls_context)
    assert native_op_counts(lambda: reranker.score(QUERY, docs))["cls_attention"] == 0
    projected = reranker.score(QUERY, docs, raw=True).logits
    # The folded path multiplies the layer's input rows in fp32; the projected one rounds keys and values (to bf16
    # for the attention's products; int8 rows for the projections' inputs).
    assert folded == pytest.approx(projected, abs=0.05 if dtype == "bfloat16" else 0.1) and folded != projected


def test_attention_gives_a_sequence_the_same_numbers_alone_and_in_any_batch():
    q, k, v = (t.bfloat16() for t in packed_qkv(LENGTHS, 12, seed=5))
    together = NativeAttention(LENGTHS, alibi_slopes(12))(q, k, v, False)
    start = sum(LENGTHS[:2])
    alone = slice(start, start + LENGTHS[2])
    assert torch.equal(
        NativeAttention([LENGTHS[2]], alibi_slopes(12))(q[alone], k[alone], v[alone], False), together[alone]
    )


def test_attention_skips_keys_beyond_the_alibi_reach():
    # A NaN value 599 tokens from query 0: attention over every key (the exact-length path below 1,024 tokens)
    # spreads it everywhere; the native kernel's head 0 (slope 0.5) never reads it, since the ALiBi penalty
    # alone puts that key below e^-20 of the query's best.
    q, k, v = packed_qkv([600], 12, seed=7)
    v[599] = float("nan")
    slopes = alibi_slopes(12)
    native = NativeAttention([600], slopes)(q, k, v, False)
    exact = ExactLengthAttention([600], slopes)(q, k, v, False)
    assert torch.isfinite(native[0, 0]).all() and torch.isnan(exact[0, 0]).all()
    assert torch.isnan(native[599]).all() and torch.isnan(native[0, slopes.argmin()]).all()  # the flattest reaches it


def test_quantize_rows_spans_each_row_with_its_own_scale():
    torch.manual_seed(0)
    x = torch.randn(50, 100) * torch.logspace(-3, 3, 50)[:, None]  # 100 columns: a tail of 4 past 6 vectors
    x[7] = 0
    x[8] = 1e-39  # subnormal: as good as zero
    values, scales = ops.quantize_rows(x)
    assert values.dtype == torch.int8 and scales.shape == (50,)
    peaks = values.abs().amax(dim=1)
    assert peaks[7] == 0 and peaks[8] == 0
    assert (peaks[torch.arange(50) < 7] == 127).all() and (peaks[9:] == 127).all()
    assert ((values.float() * scales[:, None] - x).abs() <= scales[:, None] * 0.5001).all()
    some, some_scales = ops.quantize_rows(x[5:9])
    assert torch.equal(some, values[5:9]) and torch.equal(some_scales, scales[5:9])


def test_dequantize_rows_writes_scaled_products_plus_bias_into_the_rows_it_is_given():
    torch.manual_seed(1)
    acc = torch.randint(-(2**20), 2**20, (9, 40), dtype=torch.int32)
    row_scale, col_scale, bias = torch.rand(9) + 0.1, torch.rand(40) + 0.1, torch.randn(40)
    expected = acc.double() * row_scale[:, None].double() * col_scale.double() + bias.double()
    target = torch.full((12, 40), 7.0)
    ops.dequantize_rows(acc, row_scale, col_scale, bias, target[2:11])
    assert torch.allclose(target[2:11].double(), expected, rtol=1e-6)
    assert (target[:2] == 7).all() and (target[11:] == 7).all()
    no_bias = torch.empty(9, 40)
    ops.dequantize_rows(acc, row_scale, col_scale, None, no_bias)
    assert torch.allclose(no_bias.double(), expected - bias.double(), rtol=1e-6)


def test_geglu_rows_is_the_exact_gelu_product_quantized_per_row():
    torch.manual_seed(2)
    acc = torch.randint(-(2**16), 2**16, (20, 2 * 48), dtype=torch.int32)
    row_scale, col_scale = torch.rand(20) * 1e-4, torch.rand(96) + 0.5
    values, scales = ops.geglu_rows(acc, row_scale, col_scale)
    products = acc.double() * row_scale[:, None].double() * col_scale.double()
    gate, up = products.split(48, dim=1)
    expected = F.gelu(gate) * up  # float64: the erf form
    assert values.dtype == torch.int8 and (values.abs().amax(dim=1) == 127).all()
    assert ((values.double() * scales[:, None].double() - expected).abs() <= scales[:, None].double() * 0.501).all()


def test_dequantize_add_norm_is_the_layer_norm_of_scaled_products_plus_bias_and_residual():
    torch.manual_seed(3)
    acc = torch.randint(-(2**20), 2**20, (9, 64), dtype=torch.int32)
    row_scale, col_scale, bias = torch.rand(9) * 1e-5, torch.rand(64) + 0.1, torch.randn(64)
    residual = torch.randn(12, 64) * 4
    weight, norm_bias = torch.randn(64), torch.randn(64)
    products = acc.double() * row_scale[:, None].double() * col_scale.double()
    for b in (bias, None):
        out = ops.dequantize_add_norm(acc, row_scale, col_scale, b, residual[2:11], weight, norm_bias, 1e-12)
        summed = products + residual[2:11].double() + (0 if b is None else b.double())
        expected = F.layer_norm(summed, (64,), weight.double(), norm_bias.double(), 1e-12)
        assert out.dtype == torch.float32 and out.is_contiguous()
        assert torch.allclose(out.double(), expected, atol=1e-5)


def test_gelu_product_is_the_exact_gelu_product_rounded_to_bf16_once():
    torch.manual_seed(4)
    gate = torch.cat([torch.linspace(-8, 8, 1600), torch.randn(1600) * 3]).bfloat16().view(100, 32)
    up = torch.randn(100, 32).bfloat16()
    with torch.inference_mode():
        out = ops.gelu_product(gate, up)
    expected = F.gelu(gate.double()) * up.double()  # float64: the erf form
    assert out.dtype == torch.bfloat16 and out.shape == gate.shape
    assert ((out.double() - expected).abs() <= expected.abs() * 2**-8 + 1e-6).all()  # within bf16's rounding


@pytest.mark.parametrize("with_x_bias", [False, True])
def test_add_norm_is_the_layer_norm_of_a_bf16_sum_kept_in_fp32(with_x_bias):
    torch.manual_seed(5)
    x, residual = torch.randn(9, 48).bfloat16(), (torch.randn(12, 48) * 30).bfloat16()
    weight, bias = torch.randn(48).bfloat16(), torch.randn(48).bfloat16()
    x_bias = torch.randn(48).bfloat16() if with_x_bias else None
    out = ops.add_norm(x, x_bias, residual[2:11], weight, bias, 1e-12)
    summed = x.double() + residual[2:11].double() + (0 if x_bias is None else x_bias.double())
    expected = F.layer_norm(summed, (48,), weight.double(), bias.double(), 1e-12)
    assert out.dtype == torch.bfloat16 and out.is_contiguous()
    assert ((out.double() - expected).abs() <= expected.abs() * 2**-8 + 1e-5).all()


def native_op_counts(run: Callable[[], object]) -> Counter[str]:
    """How often ``run()`` calls each native op (on one thread: in this one)."""
    return op_counts(run, prefix="jina_local_rerank_cpu::")


def native_ops_run(reranker: Reranker, docs: list[str]) -> set[str]:
    """The native ops ``reranker.score`` calls."""
    return set(native_op_counts(lambda: reranker.score(QUERY, docs)))


NATIVE_OPS = {
    "bfloat16": {"alibi_attention", "cls_attention", "gelu_product", "add_norm"},
    "int8": {
        "alibi_attention",
        "cls_attention",
        "quantize_rows",
        "geglu_rows",
        "dequantize_rows",
        "dequantize_add_norm",
    },
}


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_the_low_precision_modes_run_the_native_kernels_and_agree_with_torch_s(
    head32_checkpoint, request, fresh_engines, dtype
):
    docs = documents(16, seed=6, scale=3)
    native = Reranker(head32_checkpoint, device="cpu", dtype=dtype)
    assert native.engine.attention is NativeAttention
    linears = [m for m in native.engine.model.bert.encoder.modules() if isinstance(m, Int8Linear)]
    assert all(m._native and m.fuses_geglu and m.fuses_norm for m in linears) and bool(linears) == (dtype == "int8")
    assert native_ops_run(native, docs) == NATIVE_OPS[dtype]
    native_logits = native.score(QUERY, docs, raw=True).logits
    request.getfixturevalue("no_native_kernels")
    clear_engine_cache()  # the engine above is cached under the same key
    torch_kernels = Reranker(head32_checkpoint, device="cpu", dtype=dtype)
    assert torch_kernels.engine.attention is ExactLengthAttention
    assert not any(getattr(m, "_native", False) for m in torch_kernels.engine.model.modules())
    assert native_ops_run(torch_kernels, docs) == set()
    torch_logits = torch_kernels.score(QUERY, docs, raw=True).logits
    assert native_logits == pytest.approx(torch_logits, abs=0.1) and native_logits != torch_logits


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_with_the_native_kernels_a_logit_does_not_depend_on_its_batch_mates(head32_checkpoint, dtype):
    reranker = Reranker(head32_checkpoint, device="cpu", dtype=dtype)
    target = "use sorted to get a new sorted list or list sort to sort in place"
    alone = reranker.score(QUERY, [target], raw=True).logits[0]
    among = [*documents(9, seed=2), target, "", "x " * 400]
    assert reranker.score(QUERY, among, raw=True).logits[9] == pytest.approx(alone, abs=1e-3)


@pytest.mark.parametrize("block_rows", [1024, 16])
def test_int8_query_key_and_value_read_one_quantization_of_each_row_block(
    head32_checkpoint, monkeypatch, fresh_engines, block_rows
):
    monkeypatch.setattr(row_blocks, "CPU_BLOCK_ROWS", block_rows)
    engine = Reranker(head32_checkpoint, device="cpu", dtype="int8").engine
    sequences = [list(range(5, 45)), list(range(60, 83))]  # 63 tokens: one row block, or four of 16
    logits: dict[str, list[float]] = {}

    def forward(name: str) -> None:
        logits[name] = engine._forward(sequences)

    shared = native_op_counts(lambda: forward("shared"))
    monkeypatch.setattr(row_blocks, "shared_input", lambda layers, x: x)  # each projection quantizes its own input
    separate = native_op_counts(lambda: forward("separate"))
    assert logits["shared"] == logits["separate"]
    # Per block, q, k and v share one quantization (the last layer has <s> queries alone and no key or value rows).
    blocks = -(-63 // block_rows)
    layers = engine.model.config.num_hidden_layers
    assert separate["quantize_rows"] - shared["quantize_rows"] == blocks * 2 * (layers - 1)


def test_other_head_sizes_fall_back_to_torch_s_attention_per_call(checkpoint_dir, request, fresh_engines):
    q, k, v = (t.bfloat16() for t in packed_qkv(LENGTHS, 4, seed=9, head_dim=16))
    slopes = alibi_slopes(4)
    assert torch.equal(
        NativeAttention(LENGTHS, slopes)(q, k, v, False), ExactLengthAttention(LENGTHS, slopes)(q, k, v, False)
    )
    docs = documents(6, seed=8)
    native = Reranker(checkpoint_dir, device="cpu", dtype="bfloat16")  # heads of 16
    assert native.engine.attention is NativeAttention and native.engine.model.config.head_dim == 16
    native_logits = native.score(QUERY, docs, raw=True).logits
    request.getfixturevalue("no_native_kernels")
    clear_engine_cache()
    # The same attention; the native GEGLU and LayerNorm round to bf16 once where torch's ops round twice.
    torch_logits = Reranker(checkpoint_dir, device="cpu", dtype="bfloat16").score(QUERY, docs, raw=True).logits
    assert native_logits == pytest.approx(torch_logits, abs=0.05)


def test_fp32_never_runs_the_native_kernels(checkpoint_dir, reranker):
    assert reranker.dtype == torch.float32 and reranker.engine.attention is ExactLengthAttention


# --- building ------------------------------------------------------------------------------------------------------

PROBE = """
import json, logging, sys
from jina_local_rerank import Reranker
from jina_local_rerank.engine.scoring_engine import clear_engine_cache
from jina_local_rerank.model import native_kernels, row_blocks
records = []
logging.getLogger("jina_local_rerank").addHandler(logging.Handler())
logging.getLogger("jina_local_rerank").handlers[-1].emit = lambda record: records.append(record.getMessage())
logging.getLogger("jina_local_rerank").setLevel(logging.INFO)
reranker = Reranker(sys.argv[1], device="cpu", dtype="bfloat16")
print(json.dumps({
    "problem": native_kernels.native_kernels_problem(),
    "library": str(native_kernels.library_path()),
    "attention": reranker.engine.attention.__name__,
    "scores": reranker.score("sort a list", ["list.sort() sorts in place", "the weather"]).scores,
    "log": records,
}))
"""


def probe(checkpoint_dir: Path, cache: Path, **env: str) -> dict:
    """Load a bf16 reranker in a fresh process whose cache folder is ``cache``; what it built, ran and logged."""
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache), **env}
    environment.pop(native_kernels.SWITCH_ENV_VAR, None)
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(checkpoint_dir)], env=environment, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_a_fresh_cache_builds_the_kernels_once_atomically(checkpoint_dir, tmp_path):
    first = probe(checkpoint_dir, tmp_path)
    assert first["problem"] is None and first["attention"] == "NativeAttention"
    library = Path(first["library"])
    assert library.parent == tmp_path / "jina-local-rerank" / "kernels"
    assert sorted(p.name for p in library.parent.iterdir()) == [library.name]  # no partial file left
    built = library.stat().st_mtime_ns
    second = probe(checkpoint_dir, tmp_path)
    assert second["scores"] == first["scores"] and library.stat().st_mtime_ns == built  # loaded, not rebuilt
    assert [line for line in first["log"] if "native bf16 attention" in line]


@pytest.mark.parametrize(
    ("compiler", "reason"),
    [
        ("false", f"the build failed ({shutil.which('false')} failed: exit status 1)"),
        ("/nonexistent/c++", "no C++ compiler ($CXX or c++) to build them"),
    ],
    ids=["failing-compiler", "no-compiler"],
)
def test_without_a_working_compiler_the_modes_fall_back_and_say_why(checkpoint_dir, tmp_path, compiler, reason):
    result = probe(checkpoint_dir, tmp_path, CXX=compiler)
    assert result["problem"] == reason and result["attention"] == "ExactLengthAttention"
    assert len(result["scores"]) == 2
    assert [line for line in result["log"] if f"native kernels not used: {reason}" in line]
    kernels = tmp_path / "jina-local-rerank" / "kernels"
    assert not kernels.exists() or not any(kernels.iterdir())
