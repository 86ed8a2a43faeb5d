"""Test helper: run a test only where the native CPU kernels run, and insist on them where they must."""

from __future__ import annotations

import os

import pytest

from jina_local_rerank.model.cpu_kernels import cpu_features
from jina_local_rerank.model.native_kernels import native_kernels_problem


def require_native_kernels() -> None:
    """Skip the test where the native kernels do not run, saying why; under ``CI=true`` on a CPU with
    AVX512_BF16 (CI's machines) they must run, so a failed build fails the test instead."""
    problem = native_kernels_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true" and cpu_features()["avx512_bf16"]:
        pytest.fail(f"the native kernels must run on this AVX512_BF16 CPU: {problem}")
    pytest.skip(f"the native kernels do not run here: {problem}")
