"""Which kernels the CPU's low-precision modes run here, the fallback where a fast one is missing, and the log line.

- ``bfloat16``: oneDNN's bf16 matmuls where torch has them (``torch.ops.mkldnn._is_mkldnn_bf16_supported``: AMX,
  AVX512_BF16, ARM BF16, or AVX512 without BF16, where oneDNN converts in registers). Elsewhere (AVX2-only x86,
  ARM without BF16) torch's generic bf16 GEMM is many times slower than fp32, so the encoder's linear layers
  become :class:`Bf16ViaFp32Linear`: the same bf16 weights, multiplied by fp32 kernels. A product of two bf16
  numbers is exact in fp32 and both paths sum in fp32, so they compute the same numbers to summation order.
  Where the native kernels run (``native_kernels.py``), :func:`gelu_product` and :func:`linear_add_norm` fuse the
  GEGLU and the residual LayerNorm.
- ``int8``: FBGEMM (x86) with 8-bit activations where AVX512_VNNI adds the products in 32 bits, 7-bit
  without; ``torch._int_mm`` elsewhere (see :mod:`~jina_local_rerank.model.quantization`).

Each mode logs once per process, at INFO on the ``jina_local_rerank`` logger, which path it took and why.
"""

from __future__ import annotations

import functools
import logging
import threading

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger("jina_local_rerank")

_logged: set[str] = set()
_logged_lock = threading.Lock()


@functools.cache
def cpu_features() -> dict[str, bool | str]:
    """The CPU's architecture and the instruction sets the low-precision kernels use (False where unknown)."""
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()  # absent from older torch
    features: dict[str, bool | str] = {"architecture": str(capabilities.get("architecture", "unknown"))}
    for name in ("avx2", "avx512_f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8"):
        features[name] = bool(capabilities.get(name, False))
    return features


def native_bf16_matmul() -> bool:
    """Whether torch multiplies bf16 matrices with oneDNN here (else its generic, much slower GEMM)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def vnni() -> bool:
    """Whether FBGEMM adds 8-bit products in 32 bits here (AVX512_VNNI; its AVX2 kernels, AVX-VNNI CPUs included,
    add pairs in saturating 16 bits): the full 8-bit activation range is safe."""
    return bool(cpu_features()["avx512_vnni"])


def bf16_path() -> str:
    """The kernels ``dtype="bfloat16"`` runs on this CPU, in words."""
    from .native_kernels import attention_path  # which builds them on first use

    return f"{_bf16_linear_path()}; {attention_path()}"


def _bf16_linear_path() -> str:
    features = cpu_features()
    if not native_bf16_matmul():
        return f"bf16 weights multiplied by fp32 kernels (no native bf16 matmul on this {features['architecture']} CPU)"
    if features["amx_bf16"]:
        return "oneDNN bf16 matmuls on AMX"
    if features["avx512_bf16"]:
        return "oneDNN bf16 matmuls on AVX512_BF16"
    if features["architecture"] == "x86_64":
        return "oneDNN bf16 matmuls converted in AVX512 registers (no AVX512_BF16: about fp32 speed)"
    return f"oneDNN bf16 matmuls ({features['architecture']})"


def eager_inference() -> bool:
    """Whether the caller runs inference outside graph capture, where the inference-only CPU paths apply: autograd
    records nothing (training keeps torch's ops), and no ``torch.compile`` or ``torch.export`` (the ONNX exporter)
    traces the graph."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def _native_bf16(x: torch.Tensor) -> bool:
    """Whether the native bf16 row ops take ``x``: CPU bf16 inference, rows a multiple of 16 wide, the kernels
    loaded (built on first use). Training and graph capture (export, compile) keep torch's ops."""
    from .native_kernels import native_kernels_problem

    return (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and x.shape[-1] % 16 == 0
        and eager_inference()
        and native_kernels_problem() is None
    )


def gelu_product(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``gelu(gate) * up`` (exact GELU; JinaBERT's GEGLU), in one native pass for CPU bf16 (rounded once)."""
    if _native_bf16(gate):
        return torch.ops.jina_local_rerank_cpu.gelu_product(gate, up)
    return F.gelu(gate).mul_(up)


def linear_add_norm(linear: nn.Module, x: torch.Tensor, residual: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(linear(x) + residual)``. For CPU bf16 where the native kernels run, the product without its bias
    (oneDNN's bf16 matmuls run 5-10% faster without one), then bias, residual and norm in one native pass: the sum in
    fp32, rounded once."""
    if (
        isinstance(linear, nn.Linear)
        and _native_bf16(x)
        and x.dim() == 2
        and linear.out_features % 16 == 0
        and residual.dtype == x.dtype
    ):
        product = F.linear(x, linear.weight)
        return torch.ops.jina_local_rerank_cpu.add_norm(
            product, linear.bias, residual, norm.weight, norm.bias, norm.eps
        )
    return norm(linear(x) + residual)


def log_path_once(mode: str, path: str) -> None:
    """Log ``mode``'s kernel path at INFO, once per process and mode."""
    with _logged_lock:
        if mode in _logged:
            return
        _logged.add(mode)
    logger.info("dtype=%s on this CPU: %s", mode, path)


class Bf16ViaFp32Linear(nn.Module):
    """``nn.Linear`` in bf16 (inputs, weights and outputs) where the CPU has no native bf16 matmul: the weights are
    held as fp32 copies of their bf16 values and the product runs in fp32 kernels, then is rounded to bf16."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight.detach().to(torch.bfloat16).float()
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16).float()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[rows, in_features]`` bf16 -> ``[rows, out_features]`` bf16 (written into ``out`` if given)."""
        product = F.linear(x.float(), self.weight, self.bias)
        if out is None:
            return product.to(x.dtype)
        return out.copy_(product)


def prepare_bf16(model: nn.Module) -> nn.Module:
    """Where the CPU has no native bf16 matmul, swap the encoder's linear layers for :class:`Bf16ViaFp32Linear`
    (in place); log the path either way. Returns ``model``."""
    log_path_once("bfloat16", bf16_path())
    if not native_bf16_matmul():
        encoder = model.bert.encoder
        for parent in list(encoder.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Bf16ViaFp32Linear(child))
    return model
