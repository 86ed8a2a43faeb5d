"""The low-precision CPU modes' native kernels (``native/*.cpp``): built with the system's compiler on first use.

- ``alibi_attention`` (``native/alibi_attention.cpp``): torch's CPU attention computes in fp32 whatever the
  inputs' dtype, and at head size 32 it took a third of bf16's and two fifths of int8's time on the 1 x 100
  workload. The kernel multiplies in bf16 (``vdpbf16ps``, sums in fp32), adds the ALiBi bias and takes the softmax
  in fp32, for every sequence and head of a forward pass in one call, without a score matrix in memory.
- ``cls_attention`` (``native/cls_attention.cpp``): the last layer's ``<s>`` attention from the layer's input rows,
  with no key or value rows (``attention.NativeAttention.cls_context``).
- ``quantize_rows``, ``dequantize_rows``, ``geglu_rows`` and ``dequantize_add_norm`` (``native/int8_rows.cpp``):
  the per-token int8 activations around ``torch._int_mm`` (oneDNN), whose integer products ran 1.4-1.7x faster
  than FBGEMM's at the model's shapes; the GEGLU and each block's bias, residual and LayerNorm fused into the pass
  that scales the products back.
- ``gelu_product`` and ``add_norm`` (``native/bf16_rows.cpp``): bf16's GEGLU and residual LayerNorm in one pass
  each, in fp32, rounded to bf16 once (torch's bf16 GELU alone took 4% of bf16's time on the 1 x 100 workload).

``dtype="bfloat16"`` and ``"int8"`` use them on CPUs with AVX512_BF16 (which all have AVX512_VNNI); fp32 never
does (it stays exact). The library is compiled with the C++ compiler found as ``$CXX`` or ``c++`` against the
installed torch, once per sources, torch version and flags, into ``$XDG_CACHE_HOME/jina-local-rerank/kernels``
(``~/.cache/...``), written there atomically so that processes building at once do not clash (about 20 seconds,
once). Where it cannot run (another CPU, no compiler, a failed build, ``JINA_LOCAL_RERANK_NATIVE_KERNELS=0``) the
modes use torch's kernels, and one INFO line on the ``jina_local_rerank`` logger says which ran and why.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from ..files.user_files import atomic_output, cache_home
from .cpu_kernels import cpu_features

NATIVE = Path(__file__).with_name("native")
SOURCES = sorted(NATIVE.glob("*.cpp"))
SWITCH_ENV_VAR = "JINA_LOCAL_RERANK_NATIVE_KERNELS"  # "0" turns the native kernels off
COMPILE_FLAGS = (
    "-O3",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-fopenmp",  # native/parallel.h; links the libgomp torch loaded (same soname): one OpenMP runtime
    "-mavx512f",
    "-mavx512bw",
    "-mavx512vl",
    "-mavx512dq",
    "-mavx512bf16",
)
BUILD_TIMEOUT_S = 600

_load_lock = threading.Lock()


def _build_command(compiler: str, output: Path) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    torch_lib = Path(torch.__file__).parent / "lib"
    abi = int(torch.compiled_with_cxx11_abi())
    return [
        compiler,
        *COMPILE_FLAGS,
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *(f"-I{folder}" for folder in include_paths()),
        *map(str, SOURCES),
        f"-L{torch_lib}",
        f"-Wl,-rpath,{torch_lib}",
        "-lc10",
        "-ltorch_cpu",
        "-o",
        str(output),
    ]


def library_path() -> Path:
    """Where the built library lives: named after a hash of its sources, torch's version and the flags."""
    digest = hashlib.sha256()
    for source in sorted(NATIVE.glob("*.[ch]*")):  # the sources and the header they share
        digest.update(source.read_bytes())
    digest.update(f"{torch.__version__}|{' '.join(COMPILE_FLAGS)}".encode())
    return cache_home() / "kernels" / f"jina_local_rerank-{digest.hexdigest()[:16]}.so"


def _build(compiler: str, output: Path) -> str | None:
    """Compile the library into ``output`` (atomically); None on success, else the reason in one line."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(output, "native kernels") as temporary:
            result = subprocess.run(
                _build_command(compiler, temporary), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
            )
            if result.returncode != 0:
                errors = [line for line in result.stderr.splitlines() if "error" in line]
                lines = errors or result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
                raise RuntimeError(f"{compiler} failed: {lines[0][:300]}")
    except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        return f"the build failed ({exc})"
    return None


def _load() -> str | None:
    """Build (if needed) and load the library; None when loaded, else why it is not used, in one line."""
    if os.environ.get(SWITCH_ENV_VAR) == "0":
        return f"turned off by {SWITCH_ENV_VAR}=0"
    features = cpu_features()
    if not features["avx512_bf16"]:
        return f"this {features['architecture']} CPU has no AVX512_BF16"
    compiler = shutil.which(os.environ.get("CXX") or "c++")
    if compiler is None:
        return "no C++ compiler ($CXX or c++) to build them"
    path = library_path()
    if not path.is_file():
        problem = _build(compiler, path)
        if problem:
            return problem
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as exc:
        return f"{path} does not load ({exc})"
    return None


@functools.cache
def native_kernels_problem() -> str | None:
    """None where the native kernels are loaded (built first if needed), else why not; decided once per process."""
    with _load_lock:
        return _load()


def attention_path() -> str:
    """The attention the low-precision CPU modes run here, in words (for their log line)."""
    problem = native_kernels_problem()
    if problem is None:
        return "native bf16 attention (AVX512_BF16)"
    return f"torch's fp32 attention (native kernels not used: {problem})"
