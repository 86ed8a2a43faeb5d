"""Shared fixtures: small random checkpoints in the real on-disk format, and the parity folder."""

from __future__ import annotations

import importlib.util
import os

# Tests never reach the network; set before huggingface_hub is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest

import jina_local_rerank.engine.scoring_engine as engine_module
from jina_local_rerank import Reranker
from jina_local_rerank.engine.scoring_engine import clear_engine_cache
from jina_local_rerank.model import native_kernels
from jina_local_rerank.testing.random_checkpoint import CheckpointShape, write_random_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("JINA_LOCAL_RERANK_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))
SMALL_WINDOW = 128


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-64 random JinaBERT reranker with the full 8192-token window."""
    return write_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "jina-reranker-test", seed=1)


@pytest.fixture(scope="session")
def small_window_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``checkpoint_dir`` but with a 128-token window, for truncation and chunking."""
    shape = CheckpointShape(max_position_embeddings=SMALL_WINDOW)
    return write_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "jina-reranker-small", shape, seed=2)


@pytest.fixture(scope="session")
def head32_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random checkpoint with heads of 32 (the v1 family's), which the native CPU attention is built for."""
    shape = CheckpointShape(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=256)
    return write_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "head32", shape, seed=4)


@pytest.fixture(scope="session")
def reranker(checkpoint_dir: Path) -> Reranker:
    return Reranker(checkpoint_dir, device="cpu")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """``../shared/parity``: skipped where absent (a user's clone), required under ``CI=true``."""
    if not (PARITY_DIR / "golden.json").is_file():
        skip_unless_ci(f"parity data not found at {PARITY_DIR} (set JINA_LOCAL_RERANK_PARITY_DIR)")
    return PARITY_DIR


@pytest.fixture
def fresh_engines():
    """Engines loaded inside the test (with its patches), dropped after it; the engines cached before it (the
    session's ``reranker`` fixture among them) are cached again afterwards, so later tests still share them."""
    before = dict(engine_module._cache)
    clear_engine_cache()
    yield
    clear_engine_cache()
    engine_module._cache.update(before)


@pytest.fixture
def no_native_kernels(monkeypatch, fresh_engines):
    """The native kernels turned off as a user turns them off (``JINA_LOCAL_RERANK_NATIVE_KERNELS=0``): the
    low-precision modes on torch's kernels, as on a CPU without AVX512_BF16 or a machine without a compiler."""
    monkeypatch.setenv(native_kernels.SWITCH_ENV_VAR, "0")
    native_kernels.native_kernels_problem.cache_clear()
    yield
    native_kernels.native_kernels_problem.cache_clear()


def skip_unless_ci(reason: str) -> None:
    """Skip the test for ``reason``; under ``CI=true``, where everything must run, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run this test")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory: pytest.TempPathFactory):
    """``onnx_export(checkpoint) -> folder``: the checkpoint exported to ONNX with int8, once per session."""
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        from jina_local_rerank.install_hints import install_hint

        skip_unless_ci(f"{', '.join(missing)} not installed: {install_hint('export')}")
    from jina_local_rerank.export import export_onnx

    exports: dict[Path, Path] = {}

    def export(checkpoint: Path) -> Path:
        if checkpoint not in exports:
            output = tmp_path_factory.mktemp("onnx-export") / checkpoint.name
            exports[checkpoint] = export_onnx(checkpoint, output, quantize="int8").directory
        return exports[checkpoint]

    return export


# --- the docstring reranker: a trained model whose rankings mean something ---------------------------------------


@pytest.fixture(scope="session")
def docstring_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The docstring retrieval task: its ``train`` and ``test`` BEIR folders (see ``testing.docstring_task``)."""
    from jina_local_rerank.testing.docstring_task import write_docstring_dataset

    return write_docstring_dataset(tmp_path_factory.mktemp("docstring-task"))


@pytest.fixture(scope="session")
def trained_reranker(tmp_path_factory: pytest.TempPathFactory, docstring_task: tuple[Path, Path]):
    """The docstring reranker, trained once per session from random weights (the shared builder)."""
    pytest.importorskip("bm25s")
    from jina_local_rerank.testing.docstring_task import train_docstring_reranker

    output = tmp_path_factory.mktemp("trained") / "docstring-reranker"
    return train_docstring_reranker(output, dataset=docstring_task[0].parent)


@pytest.fixture(scope="session")
def held_out_rankings(docstring_task: tuple[Path, Path]):
    """Every held-out query with the candidates the training evaluation reranks (BM25 top ``eval_top_k``)."""
    pytest.importorskip("bm25s")
    from jina_local_rerank.testing.docstring_task import held_out_queries

    return held_out_queries(docstring_task[1])
