"""The CPU's low-precision modes: which kernels they pick, the fallbacks forced on any machine, batch-mates, parity."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from native_checks import require_native_kernels
from sorting_texts import QUERY, documents

import jina_local_rerank.model.cpu_kernels as cpu_kernels
import jina_local_rerank.model.quantization as quantization
from jina_local_rerank import Reranker
from jina_local_rerank.engine.scoring_engine import clear_engine_cache
from jina_local_rerank.model.cpu_kernels import Bf16ViaFp32Linear
from jina_local_rerank.model.quantization import Int8Linear

# Each mode against the golden (fp32) logits of every parity case, through the engine. Measured worst cases, native
# kernels / torch's kernels / every fallback: bf16 0.149 (turbo / empty_document) / 0.150 (turbo / unicode) / 0.163
# (turbo / lengths_batch), the bound of tests/test_parity.py; int8 0.528 (tiny / empty_document) / 0.678 (turbo /
# long_3000) / 0.522 (turbo / unicode): random weights put documents within a logit or two of each other and amplify
# rounding through the layers (docs/performance.md, agreement tables).
MODE_ATOL = {"bfloat16": 0.2, "int8": 0.75}


@pytest.fixture
def no_native_bf16(monkeypatch, fresh_engines):
    """This machine as one without native bf16 matmuls (AVX2-only x86, ARM without BF16)."""
    monkeypatch.setattr(cpu_kernels, "native_bf16_matmul", lambda: False)


@pytest.fixture
def no_fbgemm(monkeypatch, fresh_engines):
    """This machine as one without FBGEMM (ARM): int8 products in ``torch._int_mm``."""
    monkeypatch.setattr(quantization, "_fbgemm_available", lambda: False)


def encoder_linears(reranker: Reranker) -> list[torch.nn.Module]:
    kinds = (torch.nn.Linear, Bf16ViaFp32Linear, Int8Linear)
    return [m for m in reranker.engine.model.bert.encoder.modules() if isinstance(m, kinds)]


def test_bf16_fallback_swaps_the_encoder_linears_and_computes_the_native_numbers(checkpoint_dir, no_native_bf16):
    docs = documents(12, seed=4, scale=3)
    fallback = Reranker(checkpoint_dir, device="cpu", dtype="bfloat16")
    assert all(isinstance(m, Bf16ViaFp32Linear) for m in encoder_linears(fallback))
    fallback_logits = fallback.score(QUERY, docs, raw=True).logits
    clear_engine_cache()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu_kernels, "native_bf16_matmul", lambda: True)
        native = Reranker(checkpoint_dir, device="cpu", dtype="bfloat16")
    assert all(type(m) is torch.nn.Linear for m in encoder_linears(native))
    fp32 = Reranker(checkpoint_dir, device="cpu", dtype="float32").score(QUERY, docs, raw=True).logits
    # Same bf16 products, summed in fp32 in another order: outputs differ by a bf16 rounding at most.
    assert fallback_logits == pytest.approx(native.score(QUERY, docs, raw=True).logits, abs=0.02)
    assert fallback_logits == pytest.approx(fp32, abs=0.1)


def torch_fallbacks(monkeypatch, request) -> None:
    """Every fallback at once: no native kernels, no native bf16 matmul, no FBGEMM."""
    request.getfixturevalue("no_native_kernels")
    monkeypatch.setattr(cpu_kernels, "native_bf16_matmul", lambda: False)
    monkeypatch.setattr(quantization, "_fbgemm_available", lambda: False)


# "fast-path": what this machine picks (the native kernels where they run); "torch-kernels": the native kernels
# off (torch's attention, FBGEMM); "fallback": every fallback.
PATHS = ["fast-path", "torch-kernels", "fallback"]


def take_path(path: str, monkeypatch, request) -> None:
    if path == "torch-kernels":
        request.getfixturevalue("no_native_kernels")
    elif path == "fallback":
        torch_fallbacks(monkeypatch, request)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("path", PATHS)
def test_a_logit_does_not_depend_on_its_batch_mates(checkpoint_dir, monkeypatch, request, fresh_engines, dtype, path):
    take_path(path, monkeypatch, request)
    reranker = Reranker(checkpoint_dir, device="cpu", dtype=dtype)
    target = "use sorted to get a new sorted list or list sort to sort in place"
    alone = reranker.score(QUERY, [target], raw=True).logits[0]
    among = [target, *documents(30, seed=1, scale=4)]
    others = [*documents(7, seed=2), target, "", "x " * 400]
    assert reranker.score(QUERY, among, raw=True).logits[0] == pytest.approx(alone, abs=1e-3)
    assert reranker.score(QUERY, among[::-1], raw=True).logits[-1] == pytest.approx(alone, abs=1e-3)
    assert reranker.score(QUERY, others, raw=True).logits[7] == pytest.approx(alone, abs=1e-3)


def test_int8_without_fbgemm_runs_int_mm_close_to_fp32(checkpoint_dir, reranker, no_native_kernels, no_fbgemm):
    int8 = Reranker(checkpoint_dir, device="cpu", dtype="int8")
    layers = encoder_linears(int8)
    assert layers and all(isinstance(m, Int8Linear) and m._packed is None for m in layers)
    docs = documents(12, seed=4, scale=3)
    fp32 = reranker.score(QUERY, docs, raw=True).logits
    assert int8.score(QUERY, docs, raw=True).logits == pytest.approx(fp32, abs=0.1)


TORCH_ATTENTION = "torch's fp32 attention (native kernels not used: turned off by JINA_LOCAL_RERANK_NATIVE_KERNELS=0)"


@pytest.mark.parametrize(
    ("dtype", "patch", "expected"),
    [
        ("bfloat16", {"native_bf16_matmul": False}, ["fp32 kernels", TORCH_ATTENTION]),
        ("bfloat16", {"native_bf16_matmul": True}, ["oneDNN bf16", TORCH_ATTENTION]),
        ("int8", {"_fbgemm_available": False}, ["torch._int_mm (no FBGEMM", TORCH_ATTENTION]),
        ("int8", {"_fbgemm_available": True, "_activation_levels": 128}, ["7-bit activations", TORCH_ATTENTION]),
        ("int8", {"_fbgemm_available": True, "_activation_levels": 256}, ["FBGEMM with VNNI", TORCH_ATTENTION]),
        ("bfloat16", {"native": True}, ["oneDNN bf16", "; native bf16 attention (AVX512_BF16)"]),
        ("int8", {"native": True}, ["native per-token int8 rows", "; native bf16 attention (AVX512_BF16)"]),
    ],
    ids=[
        "bf16-fallback",
        "bf16-onednn",
        "int8-int-mm",
        "int8-fbgemm-7bit",
        "int8-fbgemm-vnni",
        "bf16-native",
        "int8-native",
    ],
)
def test_each_mode_logs_its_kernel_path_once(
    checkpoint_dir, monkeypatch, request, caplog, fresh_engines, dtype, patch, expected
):
    if patch.get("_fbgemm_available") and "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch has no FBGEMM engine here")
    if patch.pop("native", False):
        require_native_kernels()
    else:
        request.getfixturevalue("no_native_kernels")
    for name, value in patch.items():
        module = cpu_kernels if hasattr(cpu_kernels, name) else quantization
        monkeypatch.setattr(module, name, lambda value=value: value)
    monkeypatch.setattr(cpu_kernels, "_logged", set())
    with caplog.at_level(logging.INFO, logger="jina_local_rerank"):
        Reranker(checkpoint_dir, device="cpu", dtype=dtype)
        clear_engine_cache()
        Reranker(checkpoint_dir, device="cpu", dtype=dtype)  # loaded again: not logged again
    lines = [r.getMessage() for r in caplog.records if r.name == "jina_local_rerank"]
    assert len(lines) == 1 and lines[0].startswith(f"dtype={dtype} on this CPU: ")
    assert all(words in lines[0] for words in expected), lines[0]


def test_the_cpu_features_name_the_instruction_sets_the_paths_read():
    features = cpu_kernels.cpu_features()
    assert set(features) == {
        "architecture",
        "avx2",
        "avx512_f",
        "avx512_bf16",
        "avx512_vnni",
        "avx_vnni",
        "amx_bf16",
        "amx_int8",
    }
    assert all(isinstance(value, bool) for name, value in features.items() if name != "architecture")
    assert quantization._activation_levels() == (256 if features["avx512_vnni"] else 128)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("path", PATHS)
def test_low_precision_modes_stay_within_their_tolerance_of_the_golden_logits(
    parity_dir: Path, monkeypatch, request, fresh_engines, dtype, path
):
    take_path(path, monkeypatch, request)
    golden = json.loads((parity_dir / "golden.json").read_text())
    for name in ("tiny", "turbo", "heads8"):
        reranker = Reranker(parity_dir / name, device="cpu", dtype=dtype)
        for case in golden["cases"]:
            expected = golden["results"][name][case["name"]]
            sequences = [ids[:n] for ids, n in zip(expected["input_ids"], expected["seq_lens"])]
            logits = reranker.engine.logits(sequences, max_batch_tokens=16384)
            error = max(abs(a - b) for a, b in zip(logits, expected["logits"]))
            assert error < MODE_ATOL[dtype], f"{dtype} {name}/{case['name']}: max |logit error| {error:.3f}"


# --- every entry point takes the modes ---------------------------------------------------------------------------

SURFACE_DOCS = ["use sorted() to get a new list", "the weather is fine", "list.sort() sorts the list in place"]


@pytest.fixture(scope="module", params=["bfloat16", "int8"])
def mode_scores(request, checkpoint_dir: Path) -> tuple[str, list[float]]:
    """A mode and the scores ``Reranker`` gives SURFACE_DOCS in it: what every entry point must answer."""
    return request.param, Reranker(checkpoint_dir, device="cpu", dtype=request.param).score(QUERY, SURFACE_DOCS).scores


def test_the_cli_takes_the_modes(checkpoint_dir, mode_scores):
    import io

    from jina_local_rerank.cli import main

    dtype, expected = mode_scores
    out = io.StringIO()
    argv = ["rerank", "--model", str(checkpoint_dir), "--device", "cpu", "--dtype", dtype, "--query", QUERY]
    assert main([*argv, *SURFACE_DOCS], stdin=io.StringIO(""), stdout=out) == 0
    results = json.loads(out.getvalue())["results"]
    assert {r["index"]: r["relevance_score"] for r in results} == pytest.approx(dict(enumerate(expected)), abs=1e-6)


def test_the_server_takes_the_modes(checkpoint_dir, mode_scores, tmp_path):
    import httpx
    from server_process import start_server

    dtype, expected = mode_scores
    server = start_server(checkpoint_dir, tmp_path / "server.log", "--dtype", dtype, "--log-level", "warning")
    try:
        body = {"query": QUERY, "documents": SURFACE_DOCS}
        results = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=60).json()["results"]
    finally:
        server.stop()
    assert {r["index"]: r["relevance_score"] for r in results} == pytest.approx(dict(enumerate(expected)), abs=1e-5)


def test_the_adapters_take_the_modes(checkpoint_dir, mode_scores):
    pytest.importorskip("llama_index.core")
    pytest.importorskip("langchain_core")
    pytest.importorskip("haystack")
    from haystack import Document as HaystackDocument
    from langchain_core.documents import Document as LangChainDocument
    from llama_index.core.schema import NodeWithScore, TextNode

    from haystack_integrations.components.rankers.jina_local_rerank import JinaLocalRanker
    from langchain_jina_local_rerank import JinaLocalRerank as LangChainRerank
    from llama_index.postprocessor.jina_local_rerank import JinaLocalRerank as LlamaIndexRerank

    dtype, expected = mode_scores
    wanted = sorted(zip(expected, SURFACE_DOCS), reverse=True)
    nodes = [NodeWithScore(node=TextNode(text=text)) for text in SURFACE_DOCS]
    llama = LlamaIndexRerank(model=str(checkpoint_dir), device="cpu", dtype=dtype, top_n=3)
    got = [(n.score, n.node.get_content()) for n in llama.postprocess_nodes(nodes, query_str=QUERY)]
    assert [t for _, t in got] == [t for _, t in wanted]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in wanted], abs=1e-6)
    chain = LangChainRerank(model=checkpoint_dir, device="cpu", dtype=dtype, top_n=3)
    docs = chain.compress_documents([LangChainDocument(page_content=text) for text in SURFACE_DOCS], QUERY)
    assert [d.page_content for d in docs] == [t for _, t in wanted]
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([s for s, _ in wanted], abs=1e-6)
    ranker = JinaLocalRanker(str(checkpoint_dir), top_k=3, dtype=dtype)
    ranker.warm_up()
    ranked = ranker.run(query=QUERY, documents=[HaystackDocument(content=text) for text in SURFACE_DOCS])["documents"]
    assert [d.content for d in ranked] == [t for _, t in wanted]
    assert [d.score for d in ranked] == pytest.approx([s for s, _ in wanted], abs=1e-6)
